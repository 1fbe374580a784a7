import NIOCore
import NIOPosix

/// A Modbus TCP client for one device (host, port, unit id). Requests are sent one at a time (many
/// devices serve one at a time anyway); each has a deadline. A failed or timed-out request closes
/// the connection and the next request dials again, so a device that went away and came back is
/// reached without help.
public actor ModbusTCPClient {
    public let host: String
    public let port: Int
    public let unit: UInt8
    public let timeout: Duration
    var channel: (any Channel)?
    var transaction: UInt16 = 0

    public init(host: String, port: Int, unit: UInt8, timeout: Duration = .seconds(1)) {
        self.host = host; self.port = port; self.unit = unit; self.timeout = timeout
    }

    /// Sends `request` and returns the device's answer.
    public func send(_ request: ModbusRequest) async throws(ModbusError) -> ModbusResponse {
        let pdu = try request.pdu()
        let ch: any Channel
        do { ch = try await connection() } catch { throw ModbusError("cannot connect to \(host):\(port): \(error)") }
        transaction &+= 1
        let promise = ch.eventLoop.makePromise(of: [UInt8].self)
        let t = transaction
        let timeout = self.timeout
        let timer = ch.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            promise.fail(ModbusError("no answer from \(self.host):\(self.port) within \(timeout)"))
        }
        ch.writeAndFlush(ModbusCall(transaction: t, frame: ModbusCodec.frame(transaction: t, unit: unit, pdu: pdu), promise: promise), promise: nil)
        do {
            let answer = try await promise.futureResult.get()
            timer.cancel()
            return try ModbusCodec.decode(answer, for: request)
        } catch let e as ModbusError {
            timer.cancel()
            // An exception answer leaves the connection in order; anything else may not.
            if e.exceptionCode == nil { close() }
            throw e
        } catch {
            timer.cancel()
            close()
            throw ModbusError("\(error)")
        }
    }

    /// Closes the connection (the next request dials again).
    public func close() {
        channel?.close(promise: nil)
        channel = nil
    }

    func connection() async throws -> any Channel {
        if let channel, channel.isActive { return channel }
        let ch = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(timeout < .seconds(1) ? .seconds(1) : .seconds(timeout.components.seconds))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(ModbusClientHandler()) } }
            .connect(host: host, port: port).get()
        channel = ch
        return ch
    }
}

/// One request on its way: the frame and where its answer goes.
struct ModbusCall: Sendable {
    var transaction: UInt16
    var frame: [UInt8]
    var promise: EventLoopPromise<[UInt8]>
}

/// Matches answers to requests by transaction id; fails what is outstanding when the connection
/// ends or sends garbage.
final class ModbusClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ModbusCall
    typealias OutboundOut = ByteBuffer
    var reader = ModbusFrameReader()
    var pending: [UInt16: EventLoopPromise<[UInt8]>] = [:]

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let call = unwrapOutboundIn(data)
        pending[call.transaction] = call.promise
        context.write(wrapOutboundOut(ByteBuffer(bytes: call.frame)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        reader.append(bytes.readableBytesView)
        do {
            while let f = try reader.next() {
                pending.removeValue(forKey: f.transaction)?.succeed(f.pdu)
            }
        } catch {
            failAll(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(ModbusError("the device closed the connection"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    func failAll(_ error: any Error) {
        let all = pending
        pending = [:]
        for p in all.values { p.fail(error) }
    }
}
