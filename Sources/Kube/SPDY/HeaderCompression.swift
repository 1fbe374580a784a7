import CZlib

/// SPDY/3's shared header dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1): the common
/// header names, each with a 4-byte big-endian length, then common values. Built from its
/// definition; 1,423 bytes.
enum SPDYDictionary {
    static let words = [
        "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding", "accept-language",
        "accept-ranges", "age", "allow", "authorization", "cache-control", "connection", "content-base", "content-encoding",
        "content-language", "content-length", "content-location", "content-md5", "content-range", "content-type", "date", "etag",
        "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
        "last-modified", "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
        "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
        "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive",
        "origin",
    ]
    static let tail = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        + "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden"
        + "404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
        + "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
        + "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,public"
        + "privatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."

    static let bytes: [UInt8] = {
        var out: [UInt8] = []
        for w in words {
            let n = UInt32(w.utf8.count)
            out += [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
            out += Array(w.utf8)
        }
        return out + Array(tail.utf8)
    }()
}

/// A SPDY header block that cannot be read.
public struct SPDYError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// SPDY/3 header blocks: name/value pairs (4-byte lengths) compressed with one zlib stream per
/// direction for the whole session, primed with ``SPDYDictionary``. Not thread-safe: one
/// instance per direction, used by one task at a time.
public final class HeaderCompressor {
    var stream = z_stream()

    public init() throws {
        guard deflateInit_(&stream, Z_DEFAULT_COMPRESSION, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw SPDYError("zlib deflateInit failed")
        }
        let dict = SPDYDictionary.bytes
        guard dict.withUnsafeBufferPointer({ deflateSetDictionary(&stream, $0.baseAddress, uInt($0.count)) }) == Z_OK else {
            throw SPDYError("zlib deflateSetDictionary failed")
        }
    }

    deinit { deflateEnd(&stream) }

    /// Compresses one header block (sync-flushed, so the peer can decode it at once).
    public func compress(_ headers: [(String, String)]) throws -> [UInt8] {
        var plain: [UInt8] = []
        func u32(_ n: Int) { plain += [UInt8((n >> 24) & 0xff), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)] }
        u32(headers.count)
        for (k, v) in headers {
            u32(k.utf8.count); plain += Array(k.lowercased().utf8)
            u32(v.utf8.count); plain += Array(v.utf8)
        }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        try plain.withUnsafeMutableBufferPointer { input in
            stream.next_in = input.baseAddress
            stream.avail_in = uInt(input.count)
            repeat {
                let (rc, produced) = chunk.withUnsafeMutableBufferPointer { o -> (Int32, Int) in
                    stream.next_out = o.baseAddress
                    stream.avail_out = uInt(o.count)
                    let rc = deflate(&stream, Z_SYNC_FLUSH)
                    return (rc, o.count - Int(stream.avail_out))
                }
                guard rc == Z_OK || rc == Z_BUF_ERROR else { throw SPDYError("zlib deflate failed (\(rc))") }
                out += chunk[..<produced]
            } while stream.avail_out == 0
        }
        return out
    }
}

/// The reading side of ``HeaderCompressor``.
public final class HeaderDecompressor {
    var stream = z_stream()
    /// Header blocks above this size are refused (a peer cannot make us allocate without bound).
    public static let maxBlock = 256 * 1024

    public init() throws {
        guard inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw SPDYError("zlib inflateInit failed")
        }
    }

    deinit { inflateEnd(&stream) }

    public func decompress(_ block: [UInt8]) throws -> [(String, String)] {
        var plain: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        var input = block
        try input.withUnsafeMutableBufferPointer { inBuf in
            stream.next_in = inBuf.baseAddress
            stream.avail_in = uInt(inBuf.count)
            while true {
                let (rc, produced) = chunk.withUnsafeMutableBufferPointer { o -> (Int32, Int) in
                    stream.next_out = o.baseAddress
                    stream.avail_out = uInt(o.count)
                    var rc = inflate(&stream, Z_SYNC_FLUSH)
                    if rc == Z_NEED_DICT {
                        rc = SPDYDictionary.bytes.withUnsafeBufferPointer { inflateSetDictionary(&stream, $0.baseAddress, uInt($0.count)) }
                        if rc == Z_OK { rc = inflate(&stream, Z_SYNC_FLUSH) }
                    }
                    return (rc, o.count - Int(stream.avail_out))
                }
                plain += chunk[..<produced]
                guard plain.count <= Self.maxBlock else { throw SPDYError("SPDY header block larger than \(Self.maxBlock) bytes") }
                if rc == Z_BUF_ERROR || (rc == Z_OK && stream.avail_in == 0 && produced < chunk.count) { break }
                guard rc == Z_OK else { throw SPDYError("SPDY header block cannot be decompressed (zlib \(rc))") }
            }
        }
        var r = plain[...]
        func u32() throws -> Int {
            guard r.count >= 4 else { throw SPDYError("truncated SPDY header block") }
            let v = r.prefix(4).reduce(0) { $0 << 8 | Int($1) }
            r = r.dropFirst(4)
            return v
        }
        func string() throws -> String {
            let n = try u32()
            guard r.count >= n else { throw SPDYError("truncated SPDY header block") }
            defer { r = r.dropFirst(n) }
            return String(decoding: r.prefix(n), as: UTF8.self)
        }
        let count = try u32()
        guard count <= 1024 else { throw SPDYError("SPDY header block with \(count) headers") }
        var out: [(String, String)] = []
        for _ in 0..<count {
            let k = try string().lowercased()
            // Several values of one name are separated by NUL.
            for v in try string().split(separator: "\0", omittingEmptySubsequences: false) { out.append((k, String(v))) }
        }
        return out
    }
}
