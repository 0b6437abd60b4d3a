# SPDX-License-Identifier: MIT
"""kvsink.transformers.KVSinkCache: a Hugging Face transformers cache whose
K/V live in kvsinkd, quantized at the chosen bits and policy.

    cache = KVSinkCache(model, socket, bits=4, policy="kvsink")
    cached = cache.bind_prefix(input_ids)   # tokens another process stored
    out = model.generate(input_ids, past_key_values=cache, max_new_tokens=32)
    cache.close()

How it follows the kvsink-eval model (eval/EVAL.md "How a context is
computed"): each update() of layer l puts the step's new K/V into kvsinkd
(rounded to the model's 16-bit dtype) and attention sees every earlier
position as the daemon holds it (dequantized blocks, 16-bit sinks and
residual) next to the step's own 16-bit K/V. It is a DynamicCache whose
stored tensors are refreshed from the daemon: positions that became
quantized since the last step are read back (kvs_get of at most a group
plus what was quantized meanwhile), so a step costs one put and one small
get per layer, not a read of the whole past. For a model on a GPU the
client gets a device segment on it (when kvsinkd keeps a pool on that GPU)
and the K/V never leave the GPU; bind_prefix() reads every layer of the
prefix in one get (pieces only where the segment is smaller).

Token ids (the identity of cached prefixes) come from a forward pre-hook
on the model; the activation summary (hidden state after the profile's
emergence layer l_E, channels C*) from a forward hook on decoder layer l_E,
sent with layer l_E + 1's put (a summary-only put when l_E is the last
layer). bind_prefix() binds the longest cached prefix (whole blocks, at
most len - 1 tokens so that the model still computes the last position),
loads it into the cache, and generate() starts prefill after it because
get_seq_length() says so. One sequence (batch 1) per cache."""
import os

import torch
from transformers.cache_utils import DynamicCache

import kvsink

_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}


def default_model_id(model):
    """The model id kvsink uses for a transformers model: the checkpoint
    directory's (or hub name's) last component. Profiles are looked up by it
    (kvsink.calibrate writes the same)."""
    name = getattr(model.config, "_name_or_path", "") or model.config.model_type
    return os.path.basename(os.path.normpath(name))[:100] or "model"


def _decoder_layers(model):
    for path in ("model.layers", "model.decoder.layers", "transformer.h"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise TypeError("KVSinkCache: cannot find the decoder layers of %s" % type(model).__name__)


class KVSinkCache(DynamicCache):
    """A DynamicCache backed by kvsinkd; see the module text.

    bits / k_bits / v_bits / policy / pfn / outliers: kvsink.Client's
    options (16 bits stores raw 16-bit: generate() then gives transformers'
    own tokens). dtype: the 16-bit type K/V are stored in (default: the
    model's when it is float16/bfloat16, else float16).

    device: "model" (default: a device segment on the model's GPU when it
    is on one, so puts, refreshes and the bound prefix go GPU to GPU),
    None (host segment; CUDA tensors staged) or kvsink.Client's device=;
    dev_seg_size: its size (0: seg_size). client: a connected kvsink.Client
    for this model to use instead of a new connection (a server keeps one
    per process; the cache releases its sequence at close, the client
    stays open)."""

    def __init__(self, model, socket=None, *, bits=None, k_bits=None, v_bits=None, policy=None,
                 pfn=None, outliers=None, model_id=None, dtype=None, seq=None, seg_size=0,
                 device="model", dev_seg_size=0, client=None):
        super().__init__()
        cfg = model.config
        self._n_layers = cfg.num_hidden_layers
        n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        if dtype is None:
            dtype = _DTYPES.get(model.dtype, "float16")
        self.kv_model = kvsink.Model(model_id or default_model_id(model), self._n_layers, n_kv,
                                     head_dim, dtype)
        self._own_client = client is None
        if client is None:
            if device == "model":  # the device segment on the model's GPU, if it is on one
                mdev = next(model.parameters()).device
                device = mdev if mdev.type == "cuda" else None
            client = kvsink.Client(self.kv_model, socket, bits=bits, k_bits=k_bits,
                                   v_bits=v_bits, policy=policy, pfn=pfn, outliers=outliers,
                                   seg_size=seg_size, device=device, dev_seg_size=dev_seg_size)
        else:
            cm = client.model
            if (cm.n_layers, cm.n_kv_heads, cm.head_dim, cm.dtype) != \
                    (self._n_layers, n_kv, head_dim, dtype):
                raise ValueError("KVSinkCache: client is for %r, the model needs %r"
                                 % (cm, self.kv_model))
            self.kv_model = cm
        self.client = client
        info = self.client.info
        self._group = info["group"]
        self.seq = int.from_bytes(os.urandom(8), "little") >> 1 if seq is None else seq
        self._tokens = []           # ids of positions 0..n-1
        self._len = [0] * self._n_layers    # positions held by kvsinkd, per layer
        self._final = [0] * self._n_layers  # positions whose stored K/V cannot change any more
        self._act = None            # summary waiting for layer l_E + 1's put
        self._act_start = 0
        self.prefix_tokens = 0
        self.put_results = dict(quantized=0, sinks=0)
        try:
            self._hooks = [model.register_forward_pre_hook(self._pre_forward, with_kwargs=True)]
        except TypeError:  # torch < 2.0: positional input_ids only
            self._hooks = [model.register_forward_pre_hook(self._pre_forward)]
        self._sink_layer = None
        if (info["policy"] == "kvsink" and info["has_profile"] and info["sink_channels"]
                and info["sink_layer"] < self._n_layers):
            self._sink_layer = info["sink_layer"]
            self._channels = torch.tensor(info["sink_channels"], dtype=torch.long)
            self._channels_on = {}  # the index tensor per device, made once
            layer = _decoder_layers(model)[self._sink_layer]
            self._hooks.append(layer.register_forward_hook(self._after_sink_layer))

    # ---- hooks ----
    def _pre_forward(self, module, args, kwargs=None):
        ids = (kwargs or {}).get("input_ids")
        if ids is None and args:
            ids = args[0]
        if ids is None:
            raise ValueError("KVSinkCache needs input_ids (token ids identify cached prefixes)")
        if ids.shape[0] != 1:
            raise NotImplementedError("KVSinkCache holds one sequence: batch size 1")
        self._tokens.extend(int(t) for t in ids[0].tolist())

    def _after_sink_layer(self, module, args, output):
        h = output[0] if isinstance(output, (tuple, list)) else output
        n = h.shape[-2]
        ch = self._channels_on.get(h.device)
        if ch is None:
            ch = self._channels_on[h.device] = self._channels.to(h.device)
        # stays a tensor: on the device segment's GPU it goes up with the K/V
        act = h[0, :, ch].float()
        start = len(self._tokens) - n
        if self._sink_layer + 1 < self._n_layers:
            self._act, self._act_start = act, start
        else:
            L = self._n_layers
            self.client.put(self.seq, start, self._tokens[start:start + n], None, None,
                            layers=(L, L), act=act)

    # ---- the Cache interface ----
    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        if key_states.shape[0] != 1:
            raise NotImplementedError("KVSinkCache holds one sequence: batch size 1")
        n = key_states.shape[-2]
        start = self._len[layer_idx]
        if start + n > len(self._tokens):
            raise RuntimeError("KVSinkCache: layer %d at %d + %d tokens, %d token ids seen"
                               % (layer_idx, start, n, len(self._tokens)))
        # [1, heads, n, dim] -> [1 layer, n, heads, dim] for kvsink
        k = key_states[0].transpose(0, 1).unsqueeze(0)
        v = value_states[0].transpose(0, 1).unsqueeze(0)
        act = None
        if self._act is not None and layer_idx == self._sink_layer + 1:
            if self._act_start != start:
                raise RuntimeError("KVSinkCache: summary of %d for a put at %d"
                                   % (self._act_start, start))
            act, self._act = self._act, None
        res = self.client.put(self.seq, start, self._tokens[start:start + n], k, v,
                              layers=layer_idx, act=act)
        self.put_results["quantized"] += res["quantized"]
        self.put_results["sinks"] += res["sinks"]
        self._len[layer_idx] = start + n
        # the step itself attends to its own K/V in 16 bits (the model dtype)
        want = torch.bfloat16 if self.kv_model.dtype == "bfloat16" else torch.float16
        ks = key_states.to(want).to(key_states.dtype)
        vs = value_states.to(want).to(value_states.dtype)
        k_all, v_all = super().update(ks, vs, layer_idx, cache_kwargs)
        self._refresh(layer_idx, start, k_all, v_all)
        return k_all, v_all

    def _refresh(self, layer, upto, k_all, v_all):
        """Earlier positions as kvsinkd holds them now: [final, upto)."""
        lo = self._final[layer]
        if upto <= lo:
            return
        # straight into the cache's tensors ([1, heads, n, dim] seen as
        # [1 layer, n, heads, dim]); GPU to GPU with a device segment
        self.client.get(self.seq, lo, upto - lo, layers=layer,
                        out=(k_all[0, :, lo:upto].transpose(0, 1).unsqueeze(0),
                             v_all[0, :, lo:upto].transpose(0, 1).unsqueeze(0)))
        # full groups before upto are quantized (their summaries went out
        # in the step that computed them); the residual after may change
        self._final[layer] = upto // self._group * self._group

    # ---- prefixes ----
    def bind_prefix(self, input_ids, device=None):
        """Bind the longest prefix of input_ids (1 x n) that kvsinkd holds
        (whole blocks, at most n - 1 tokens) and load it onto device (default:
        input_ids' device); returns its length. Call on an empty cache,
        before generate()."""
        if self._tokens:
            raise RuntimeError("bind_prefix on a cache that already holds tokens")
        ids = [int(t) for t in torch.as_tensor(input_ids).reshape(-1).tolist()]
        if len(ids) < 2:
            return 0
        # one lookup carries at most MAX_TOKENS_PER_PUT ids: longer prompts
        # bind at most that much
        n = self.client.lookup(self.seq, ids[:min(len(ids) - 1, kvsink._lib.MAX_TOKENS_PER_PUT)],
                               bind=True)
        if n == 0:
            return 0
        dev = device if device is not None else getattr(input_ids, "device", None)
        dev = torch.device(dev if dev is not None else "cpu")
        dt = torch.bfloat16 if self.kv_model.dtype == "bfloat16" else torch.float16
        m = self.kv_model
        # every layer in one get (split only where the segment is smaller),
        # written transposed into [layers, heads, n, dim] buffers whose
        # layer slices are what the DynamicCache holds
        kb = torch.empty(self._n_layers, m.n_kv_heads, n, m.head_dim, dtype=dt, device=dev)
        vb = torch.empty_like(kb)
        self.client.get(self.seq, 0, n, out=(kb.transpose(1, 2), vb.transpose(1, 2)))
        for layer in range(self._n_layers):
            super().update(kb[layer:layer + 1], vb[layer:layer + 1], layer, None)
            self._len[layer] = self._final[layer] = n
        self._tokens = ids[:n]
        self.prefix_tokens = n
        return n

    def close(self):
        """Remove the hooks, release the sequence (its blocks stay cached
        for others) and disconnect."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self.client is not None:
            try:
                self.client.release(self.seq)
            except kvsink.KVSinkError:
                pass  # nothing was stored
            if self._own_client:
                self.client.close()
            self.client = None
