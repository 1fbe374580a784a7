import KubeAPI
import Testing
@testable import APIServer

/// The HTTP exchange of pods/proxy and services/proxy, without a pod.
@Suite struct ProxiedHTTPTests {
    @Test func requestCarriesNoCredentialsAndNoInjectedLines() {
        let r = String(decoding: ProxiedHTTP.request(method: "GET", path: "/a b", query: ProxiedHTTP.encodeQuery(["q": "x/y z"]), host: "10.0.0.5:80",
                                                     headers: ["authorization": "Bearer secret", "accept": "text/html", "x-evil": "a\r\nHost: other"],
                                                     body: []), as: UTF8.self)
        #expect(r.hasPrefix("GET /a%20b?q=x%2Fy%20z HTTP/1.1\r\nHost: 10.0.0.5:80\r\nConnection: close\r\n"))
        #expect(r.contains("accept: text/html\r\n") && !r.contains("secret") && !r.contains("other"))
        #expect(r.hasSuffix("\r\n\r\n"))
    }

    @Test func responsesByLengthChunksOrClose() throws {
        let sized = Array("HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nnope!".utf8)
        #expect(ProxiedHTTP.isComplete(sized) && !ProxiedHTTP.isComplete(Array(sized.dropLast())))
        let r = try #require(ProxiedHTTP.Response(parsing: sized))
        #expect(r.status == 404 && r.headers["content-type"] == "text/html" && r.body == Array("nope!".utf8))
        let chunked = Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n".utf8)
        #expect(ProxiedHTTP.isComplete(chunked) && !ProxiedHTTP.isComplete(Array(chunked.prefix(60))))
        #expect(ProxiedHTTP.Response(parsing: chunked)?.body == Array("hello world".utf8))
        let untilClose = Array("HTTP/1.0 200 OK\r\n\r\nall of it".utf8)
        #expect(!ProxiedHTTP.isComplete(untilClose) && ProxiedHTTP.Response(parsing: untilClose)?.body == Array("all of it".utf8))
        #expect(ProxiedHTTP.Response(parsing: Array("SSH-2.0-OpenSSH\r\n\r\n".utf8)) == nil)
        #expect(ProxiedHTTP.Response(parsing: Array("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort".utf8)) == nil)
    }

    @Test func targets() throws {
        let pod = try ProxyTarget(parsing: "app:8080"), svc = try ProxyTarget(parsing: "http:web:http"), bare = try ProxyTarget(parsing: "app")
        #expect((pod.name, pod.port, svc.name, svc.port, bare.name, bare.port) == ("app", "8080", "web", "http", "app", ""))
        #expect(throws: StatusError.self) { try ProxyTarget(parsing: "https:web:443") }
    }
}
