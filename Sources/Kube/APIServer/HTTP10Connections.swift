import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1

/// HTTP/1.0 clients (ApacheBench, `curl -0`): the HTTP-types conversion drops the request's
/// version and answers in HTTP/1.1, so such a client without keep-alive waited for a close that
/// never came, and one with keep-alive was not told the connection stays open. This handler,
/// before the conversion, marks a non-keep-alive HTTP/1.0 request `Connection: close` (the
/// server then closes after the response) and answers HTTP/1.0 requests in HTTP/1.0, with
/// `Connection: keep-alive` when the client asked for it.
final class HTTP10Connections: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Per request in flight, in order: nil for HTTP/1.1, else whether it keeps the connection.
    var inFlight: [Bool?] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var part = unwrapInboundIn(data)
        if case .head(var head) = part {
            if head.version == .http1_0 {
                let keepAlive = head.isKeepAlive
                inFlight.append(keepAlive)
                if !keepAlive {
                    head.headers.replaceOrAdd(name: "connection", value: "close")
                    part = .head(head)
                }
            } else {
                inFlight.append(nil)
            }
        }
        context.fireChannelRead(wrapInboundOut(part))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var part = unwrapOutboundIn(data)
        if case .head(var head) = part, head.status.code >= 200 || head.status == .switchingProtocols {
            if let keepAlive = inFlight.isEmpty ? nil : inFlight.removeFirst() {
                head.version = .http1_0
                head.headers.replaceOrAdd(name: "connection", value: keepAlive ? "keep-alive" : "close")
                part = .head(head)
            }
        }
        context.write(wrapOutboundOut(part), promise: promise)
    }

    /// The handler given to the server (it is added after the conversion): it places
    /// ``HTTP10Connections`` in front of the conversion and passes everything on unchanged.
    final class Installer: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny

        func handlerAdded(context: ChannelHandlerContext) {
            let ops = context.pipeline.syncOperations
            if let codec = try? ops.handler(type: HTTP1ToHTTPServerCodec.self) {
                try? ops.addHandler(HTTP10Connections(), position: .before(codec))
            }
        }
    }
}
