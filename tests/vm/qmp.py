#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Tiny QMP client for the vm suite (stdlib only).

  qmp.py SOCKET COMMAND [JSON-ARGUMENTS]
      run one QMP command, print its "return" value as JSON on stdout;
      exit 1 (the error on stderr) when QEMU answers with an error.
  qmp.py SOCKET wait-migrate SECONDS
      poll query-migrate every 50 ms until the status is completed, failed
      or cancelled (or SECONDS pass); print the last answer as JSON; exit 0
      only when the migration completed.
  qmp.py SOCKET wait-status STATUS SECONDS
      poll query-status until the run state is STATUS; exit 1 on timeout.

Each call is one connection: greeting, qmp_capabilities, the command(s).
Events that arrive in between are skipped.
"""
import json
import socket
import sys
import time


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        # QEMU's QMP server takes one client at a time: retry while busy
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (ConnectionRefusedError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = b""
        greeting = self._read()
        if "QMP" not in greeting:
            raise QMPError("no QMP greeting: %r" % greeting)
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise QMPError("QEMU closed the QMP connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, args=None):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            ans = self._read()
            if "event" in ans:
                continue
            if "error" in ans:
                raise QMPError("%s: %s" % (name, ans["error"].get("desc", ans["error"])))
            if "return" in ans:
                return ans["return"]

    def close(self):
        self.sock.close()


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, what = argv[1], argv[2]
    try:
        q = QMP(path)
        try:
            if what == "wait-migrate":
                limit = time.monotonic() + float(argv[3] if len(argv) > 3 else 60)
                while True:
                    ans = q.cmd("query-migrate")
                    if ans.get("status") in ("completed", "failed", "cancelled") or \
                       time.monotonic() > limit:
                        break
                    time.sleep(0.05)
                print(json.dumps(ans))
                return 0 if ans.get("status") == "completed" else 1
            if what == "wait-status":
                want = argv[3]
                limit = time.monotonic() + float(argv[4] if len(argv) > 4 else 30)
                while True:
                    ans = q.cmd("query-status")
                    if ans.get("status") == want:
                        print(json.dumps(ans))
                        return 0
                    if time.monotonic() > limit:
                        print(json.dumps(ans))
                        return 1
                    time.sleep(0.05)
            args = json.loads(argv[3]) if len(argv) > 3 else None
            print(json.dumps(q.cmd(what, args)))
            return 0
        finally:
            q.close()
    except (OSError, ValueError, QMPError) as e:
        print("qmp.py: %s: %s" % (what, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
