#!/bin/sh
# SPDX-License-Identifier: MIT
# Build the English text corpus for the kvsink test model from Debian
# documentation packages.  Output (git-ignored): eval/data/{train,valid,test}.txt
# and train.txt.xz/valid.txt.xz.  Documents are separated by a line holding
# only the byte 0x1e (ASCII record separator).  Deterministic: files are
# sorted and each file's split is chosen by a hash of its path (90/5/5).
#
# Usage: eval/make-corpus.sh [OUTDIR]     (KVSINK_NO_APT=1 skips apt-get)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/data}
mkdir -p "$out"

if [ "${KVSINK_NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ]; then
    # Best effort: extra English docs; the corpus is large enough without.
    apt-get install -y -q --no-install-recommends \
        linux-doc-6.1 python3.11-doc perl-doc fortunes \
        debian-reference-en bash-doc gawk-doc make-doc sed grep \
        >/dev/null 2>&1 || echo "make-corpus: some packages unavailable" >&2
fi

/usr/bin/python3 - "$out" <<'PY'
import gzip, hashlib, html, os, re, sys
out = sys.argv[1]
SEP = b"\x1e"

def sources():
    roots = [
        ("/usr/share/doc/linux-doc-6.1", (".gz", ".txt")),
        ("/usr/share/doc/python3.11", (".txt",)),
        ("/usr/share/doc/python3.11/html", (".html",)),
        ("/usr/share/perl", (".pod",)),
        ("/usr/share/games/fortunes", ("",)),
        ("/usr/share/info", (".info.gz", ".info")),
        ("/usr/share/doc/debian-reference-en", (".txt", ".txt.gz")),
    ]
    seen = set()
    for root, exts in roots:
        if not os.path.isdir(root):
            continue
        for d, dirs, files in os.walk(root):
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(d, f)
                if p in seen or os.path.islink(p):
                    continue
                if exts == ("",):
                    if "." in f:
                        continue
                elif not f.endswith(exts):
                    continue
                # python docs: html is only used where no text twin exists
                if p.endswith(".html") and "python3.11" in p and \
                        os.path.exists(p[:-5] + ".txt"):
                    continue
                seen.add(p)
                yield p

TAG = re.compile(rb"<(script|style)\b.*?</\1>|<[^>]*>", re.S | re.I)
def clean(p, b):
    if p.endswith(".gz"):
        try:
            b = gzip.decompress(b)
        except Exception:
            return None
    if p.endswith(".html"):
        b = TAG.sub(b"", b)
        b = html.unescape(b.decode("utf-8", "replace")).encode("utf-8")
    if p.endswith(".pod"):
        b = re.sub(rb"^=(head\d|item|over|back|pod|cut|begin|end|for|encoding)\b ?",
                   b"", b, flags=re.M)
        b = re.sub(rb"[BICFLSEX]<<+ (.*?) >+>", rb"\1", b)
        b = re.sub(rb"[BICFLSX]<([^<>]*)>", rb"\1", b)
    if ".info" in p:
        b = b.replace(b"\x1f", b"").replace(b"\x7f", b"")
    if p.startswith("/usr/share/games/fortunes"):
        b = b.replace(b"\n%\n", b"\n\n")
    # binary-looking: NULs or many control bytes
    if b"\x00" in b[:65536]:
        return None
    ctrl = sum(1 for c in b[:65536] if c < 9 or 13 < c < 32 or c == 127)
    if ctrl > len(b[:65536]) // 200:
        return None
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        b = b.decode("latin-1").encode("utf-8")
    b = b.replace(SEP, b"")
    b = re.sub(rb"[ \t]+\n", b"\n", b)
    b = re.sub(rb"\n{3,}", b"\n\n", b).strip()
    return b if len(b) >= 500 else None

outs = {k: open(os.path.join(out, k + ".txt"), "wb") for k in ("train", "valid", "test")}
stats = {k: [0, 0] for k in outs}
for p in sources():
    with open(p, "rb") as fh:
        b = clean(p, fh.read())
    if b is None:
        continue
    h = int.from_bytes(hashlib.sha256(p.encode()).digest()[:4], "big") % 100
    k = "train" if h < 90 else ("valid" if h < 95 else "test")
    if stats[k][0]:
        outs[k].write(b"\n" + SEP + b"\n")
    outs[k].write(b)
    stats[k][0] += 1
    stats[k][1] += len(b)
for k, f in outs.items():
    f.write(b"\n")
    f.close()
    print("%s: %d documents, %d bytes" % (k, stats[k][0], stats[k][1]))
PY
for f in train valid test; do
    xz -T2 -6 -k -f "$out/$f.txt"
done
ls -l "$out"
