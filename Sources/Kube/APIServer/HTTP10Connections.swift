import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1

/// HTTP/1.0 clients (ApacheBench, `curl -0`) expect the server to close the connection after
/// the response unless they asked for keep-alive. The HTTP-types conversion drops the request's
/// version, so this handler, added after it, puts a sibling before it that marks such requests
/// `Connection: close` — which the server honours by closing once the response is written.
final class HTTP10ConnectionClose: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var part = unwrapInboundIn(data)
        if case .head(var head) = part, head.version.major == 1, head.version.minor == 0, !head.isKeepAlive {
            head.headers.replaceOrAdd(name: "connection", value: "close")
            part = .head(head)
        }
        context.fireChannelRead(wrapInboundOut(part))
    }

    /// The handler given to the server: on being added it places ``HTTP10ConnectionClose`` in
    /// front of the HTTP-types codec; it passes everything on unchanged.
    final class Installer: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny

        func handlerAdded(context: ChannelHandlerContext) {
            let ops = context.pipeline.syncOperations
            if let codec = try? ops.handler(type: HTTP1ToHTTPServerCodec.self) {
                try? ops.addHandler(HTTP10ConnectionClose(), position: .before(codec))
            }
        }
    }
}
