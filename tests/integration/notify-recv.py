#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Receive sd_notify datagrams on a Unix socket; append each to a file.

usage: notify-recv.py SOCKET_PATH OUT_FILE   (runs until killed)
"""
import os
import socket
import sys

path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(out, "a", buffering=1) as f:
    f.write("listening\n")
    while True:
        msg = s.recv(4096).decode("utf-8", "replace")
        for line in msg.split("\n"):
            if line:
                f.write(line + "\n")
