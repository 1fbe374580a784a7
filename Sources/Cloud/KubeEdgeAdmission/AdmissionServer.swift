import HTTPService
import Hummingbird
import KubeAPI
import KubeClient
import Logging
import NIOCore
import ServiceLifecycle

/// Reads RuleEndpoints and Rules through a Kubernetes API client.
public struct KubeClientObjectReader: KubeEdgeObjectReader {
    let client: any KubeClient
    public init(client: any KubeClient) { self.client = client }

    public func get(_ type: ResourceType, namespace: String, name: String) async throws -> JSON? {
        do { return try await client.get(type, namespace: namespace, name: name) } catch let e as StatusError where e.code == 404 { return nil }
    }

    public func list(_ type: ResourceType, namespace: String) async throws -> [JSON] {
        try await client.list(type, namespace: namespace)["items"].arrayValue ?? []
    }
}

/// `swiftedge admission`'s server: KubeEdge's webhook paths over HTTPS (AdmissionReview v1,
/// `application/json`, bodies up to 1 MiB), answered by ``KubeEdgeAdmission``.
public struct KubeEdgeAdmissionServer: Service {
    let admission: KubeEdgeAdmission
    let host: String
    let port: Int
    let tls: ServerTLSIdentity
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void

    public init(admission: KubeEdgeAdmission, host: String, port: Int, tls: ServerTLSIdentity, logger: Logger,
                onRunning: @escaping @Sendable (Int) async -> Void = { _ in })
    {
        self.admission = admission; self.host = host; self.port = port; self.tls = tls; self.logger = logger; self.onRunning = onRunning
    }

    static let maxBody = 1 << 20

    public func run() async throws {
        let router = Router(context: ConnectionRequestContext.self)
        let admission = self.admission, logger = self.logger, onRunning = self.onRunning
        @Sendable func plain(_ status: HTTPResponse.Status, _ text: String) -> Response {
            Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text + "\n")))
        }
        for path in KubeEdgeAdmission.Path.allCases {
            router.post(RouterPath(path.rawValue)) { request, _ -> Response in
                guard request.headers[.contentType]?.split(separator: ";").first.map({ $0.trimmingCharacters(in: .whitespaces) }) == "application/json" else {
                    return plain(.unsupportedMediaType, "contentType=\(request.headers[.contentType] ?? ""), expect application/json")
                }
                var request = request
                let body: ByteBuffer
                do { body = try await request.collectBody(upTo: Self.maxBody) } catch {
                    return plain(.contentTooLarge, "the AdmissionReview is larger than \(Self.maxBody) bytes")
                }
                let review: JSON
                do { review = try JSON.parse(Array(body.readableBytesView)) } catch {
                    return plain(.badRequest, "the body is not an AdmissionReview: \(error)")
                }
                guard review["kind"].stringValue == "AdmissionReview", !review["request"]["uid"].isNull else {
                    return plain(.badRequest, "the body is not an AdmissionReview v1 with a request")
                }
                let answer = await admission.review(path, review)
                if answer["response"]["allowed"].boolValue != true {
                    logger.info("admission refused", metadata: ["path": "\(path.rawValue)", "name": "\(review["request"]["name"].stringValue ?? "")",
                                                                "reason": "\(answer["response"]["status"]["message"].stringValue ?? "")"])
                }
                return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: answer.serialized())))
            }
        }
        let server = HTTPService(responder: router.buildResponder(), host: host, port: port, serverName: "swiftedge-admission", tls: tls,
                                 logger: logger) { channel in
            let bound = channel.localAddress?.port ?? 0
            logger.info("KubeEdge admission webhook listening", metadata: ["address": "\(host):\(bound)"])
            await onRunning(bound)
        }
        try await server.run()
    }
}
