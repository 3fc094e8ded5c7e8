"""A blocking SPOP client, HAProxy's side of the connection. Every read has a deadline."""

import errno
import os
import select
import socket
import struct
import time

from .codec import T_AGENT_HELLO, parse_frame, split_frames
from .vectors import V1_HELLO_34

DEFAULT_TIMEOUT = 5.0


class Conn:
    """A blocking SPOP client socket with a frame reader."""

    def __init__(self, addr, family=socket.AF_INET, timeout=DEFAULT_TIMEOUT, sock=None):
        if sock is None:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(addr)
            except BaseException:
                sock.close()
                raise
        else:
            sock.settimeout(timeout)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def rst(self):
        """Close with an RST (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def _fill(self, deadline):
        """Reads more bytes; False on EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out waiting for data from the agent (have %d bytes: %s)"
                                 % (len(self.buf), bytes(self.buf[:64]).hex()))
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("timed out waiting for data from the agent (have %d bytes: %s)"
                                 % (len(self.buf), bytes(self.buf[:64]).hex())) from None
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def recv_frame(self, timeout=DEFAULT_TIMEOUT):
        """The next frame, or None on a clean EOF. A partial frame at EOF is an error."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    raw = bytes(self.buf[:4 + n])
                    del self.buf[:4 + n]
                    return parse_frame(raw)
            if self.eof or not self._fill(deadline):
                if self.buf:
                    raise AssertionError("EOF inside a frame: %s" % bytes(self.buf).hex())
                return None

    def read_until_eof(self, timeout=DEFAULT_TIMEOUT, limit=1 << 20):
        """Everything up to EOF (bounded in time and size); returns the raw bytes."""
        deadline = time.monotonic() + timeout
        while not self.eof and len(self.buf) <= limit:
            if not self._fill(deadline):
                break
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def handshake(self, hello_bytes=None, timeout=DEFAULT_TIMEOUT):
        self.send(hello_bytes if hello_bytes is not None else V1_HELLO_34)
        f = self.recv_frame(timeout)
        if f is None or f.type != T_AGENT_HELLO:
            raise AssertionError("expected AGENT-HELLO, got %r" % (f,))
        return f



def open_many(addr, n, family=socket.AF_INET, timeout=10.0):
    """Opens n connections at once (non-blocking connects); returns blocking Conn objects."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setblocking(False)
            rc = s.connect_ex(addr)
            if rc not in (0, errno.EINPROGRESS):
                raise AssertionError("connect: %s" % os.strerror(rc))
        poller = select.poll()
        pending = {s.fileno(): s for s in socks}
        for fd in pending:
            poller.register(fd, select.POLLOUT)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%d of %d connects did not complete" % (len(pending), n))
            for fd, _ev in poller.poll(int(left * 1000) + 1):
                s = pending.pop(fd, None)
                if s is None:
                    continue
                poller.unregister(fd)
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise AssertionError("connect failed: %s" % os.strerror(err))
        return [Conn(None, sock=s, timeout=timeout) for s in socks]
    except BaseException:
        for s in socks:
            s.close()
        raise



def wait_peek_frames(c, count, timeout=5.0):
    """Waits (MSG_PEEK, nothing consumed) until `count` whole frames are in c's receive buffer."""
    deadline = time.monotonic() + timeout
    while True:
        c.sock.settimeout(0.05)
        try:
            data = c.sock.recv(1 << 16, socket.MSG_PEEK)
        except socket.timeout:
            data = b""
        if len(split_frames(data, allow_partial=True)) >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError("only %d bytes arrived, expected %d frames" % (len(data), count))
        time.sleep(0.02)

