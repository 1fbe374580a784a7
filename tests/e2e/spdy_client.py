"""A SPDY/3.1 client doing what kube-apiserver does on a kubelet's streaming port: an HTTPS
`Upgrade: SPDY/3.1` request with `X-Stream-Protocol-Version`, then streams (SYN_STREAM with
zlib-compressed header blocks primed with SPDY's dictionary), DATA frames with FIN. Written
from the SPDY/3 draft and Kubernetes' remotecommand/portforward conventions, independently of
the server under test."""
import socket
import ssl
import struct
import zlib

_WORDS = ["options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding", "accept-language",
          "accept-ranges", "age", "allow", "authorization", "cache-control", "connection", "content-base", "content-encoding",
          "content-language", "content-length", "content-location", "content-md5", "content-range", "content-type", "date", "etag",
          "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
          "last-modified", "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
          "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
          "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive",
          "origin"]
_TAIL = ("100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
         "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden"
         "404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
         "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
         "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,public"
         "privatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()
assert len(DICTIONARY) == 1423


class UpgradeRefused(Exception):
    pass


class SPDYClient:
    def __init__(self, port, path, host_header, protocol, cert=None, timeout=20):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(*cert)
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                           f"X-Stream-Protocol-Version: {protocol}\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise UpgradeRefused(f"connection closed during the upgrade: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.response = head.decode()
        if not self.response.startswith("HTTP/1.1 101"):
            raise UpgradeRefused(self.response)
        self.compress = zlib.compressobj(zdict=DICTIONARY)
        self.decompress = zlib.decompressobj(zdict=DICTIONARY)
        self.next_id = 1
        self.replied = set()
        self.data = {}      # stream → bytes
        self.finished = set()
        self.goaway = False

    def _header_block(self, headers):
        raw = struct.pack(">I", len(headers))
        for k, v in headers.items():
            raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        return self.compress.compress(raw) + self.compress.flush(zlib.Z_SYNC_FLUSH)

    def open(self, headers, fin=False):
        sid = self.next_id
        self.next_id += 2
        payload = struct.pack(">II", sid, 0) + b"\x00\x00" + self._header_block(headers)
        self.sock.sendall(struct.pack(">HHI", 0x8003, 1, ((1 if fin else 0) << 24) | len(payload)) + payload)
        self.data[sid] = b""
        return sid

    def send(self, sid, data, fin=False):
        self.sock.sendall(struct.pack(">II", sid, ((1 if fin else 0) << 24) | len(data)) + data)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self):
        """Reads one frame and records it; returns False once the connection is closed."""
        try:
            head = self._read(8)
        except (EOFError, OSError):
            return False
        word, flags_len = struct.unpack(">II", head)
        flags, length = flags_len >> 24, flags_len & 0xFFFFFF
        payload = self._read(length)
        if word & 0x80000000:
            kind = word & 0xFFFF
            if kind == 2:  # SYN_REPLY
                self.replied.add(struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF)
                self.decompress.decompress(payload[4:])
            elif kind == 7:  # GOAWAY
                self.goaway = True
            elif kind == 3:  # RST_STREAM
                self.finished.add(struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF)
        else:
            sid = word & 0x7FFFFFFF
            self.data[sid] = self.data.get(sid, b"") + payload
            if flags & 1:
                self.finished.add(sid)
        return True

    def until(self, pred):
        while not pred():
            if not self.read_frame():
                break
        return pred()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def exec_(port, host_header, path, cert, stdin=None, tty=None):
    """Runs an exec as kube-apiserver does; returns (stdout, stderr, status JSON bytes).
    tty: (width, height) for a terminal (a resize stream, no stderr)."""
    c = SPDYClient(port, path, host_header, "v4.channel.k8s.io", cert)
    try:
        err = c.open({"streamtype": "error"})
        sin = c.open({"streamtype": "stdin"}) if stdin is not None else None
        out = c.open({"streamtype": "stdout"})
        er2 = None if tty else c.open({"streamtype": "stderr"})
        size = c.open({"streamtype": "resize"}) if tty else None
        assert c.until(lambda: {err, out} <= c.replied), c.replied
        if size:
            c.send(size, ('{"Width":%d,"Height":%d}\n' % tty).encode())
        if sin is not None:
            c.send(sin, stdin, fin=True)
        c.until(lambda: err in c.finished)
        return c.data[out], c.data.get(er2, b"") if er2 else b"", c.data[err]
    finally:
        c.close()
