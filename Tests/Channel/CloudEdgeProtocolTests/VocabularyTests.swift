import CloudEdgeProtocol
import KubeAPI
import Testing

/// The cloud–edge vocabulary against KubeEdge's wire: the strings here are the contract (what
/// KubeEdge's edgecore and cloudcore send and expect), so a renamed case or a changed route fails.
@Suite struct VocabularyTests {
    @Test func wireNamesAreKubeEdges() {
        // KubeEdge's names, plus SwiftEdge's own: the RBAC kinds MetaServer authorizes with, the
        // MetaServer's serving-certificate request (`certificatesigningrequest`, KubeEdge's csr type
        // name), its forwarded requests (`apirequest`), the node's CSINode report (`csinode`) and the
        // CSIDrivers sent to edge nodes (`csidriver`).
        #expect(EdgeResourceKind.allCases.map(\.wireName).sorted() == [
            "apirequest", "ca.crt", "certificatesigningrequest", "clusterrole", "clusterrolebinding", "configmap", "csidriver", "csinode", "device",
            "devicemodel", "devicestatus", "endpoints", "event", "lease", "node", "nodepatch", "nodestatus", "objectsync", "persistentvolume",
            "persistentvolumeclaim", "pod", "podpatch", "podstatus", "role", "rolebinding", "secret", "service", "serviceaccounttoken",
            "volume", "volumeattachment",
        ])
        #expect(EdgeResourceKind.allCases.filter(\.isSynced).map(\.wireName).sorted() == [
            "clusterrole", "clusterrolebinding", "configmap", "csidriver", "device", "devicemodel", "endpoints", "node", "persistentvolume",
            "persistentvolumeclaim", "pod", "role", "rolebinding", "secret", "service", "volumeattachment",
        ])
    }

    @Test func syncedKindsMapToTheirKubernetesTypes() throws {
        for kind in EdgeResourceKind.allCases where kind.isSynced {
            let type = try #require(kind.resourceType)
            #expect(EdgeResourceKind(apiVersion: type.apiVersion, kind: type.kind) == kind)
        }
        #expect(EdgeResourceKind(apiVersion: "v1", kind: "ConfigMap") == .configMap)
        #expect(EdgeResourceKind(apiVersion: "devices.kubeedge.io/v1beta1", kind: "DeviceModel") == .deviceModel)
        #expect(EdgeResourceKind(apiVersion: "v1", kind: "Event") == nil)  // a report kind, never synced
        #expect(EdgeResourceKind(apiVersion: "apps/v1", kind: "Deployment") == nil)
    }

    @Test func resourceStringsParseAndRefuseWhatIsNotInTheVocabulary() throws {
        #expect(try ResourceRef(parsing: "default/configmap/app") == ResourceRef(namespace: "default", kind: .configMap, name: "app"))
        #expect(try ResourceRef(parsing: "null/devicestatus") == ResourceRef(namespace: nil, kind: .deviceStatus))
        #expect(ResourceRef(namespace: nil, kind: .node, name: "n1").description == "null/node/n1")
        do {
            _ = try ResourceRef(parsing: "default/widget/w")
            Issue.record("an unknown kind was accepted")
        } catch { #expect(error.reason == .unknownKind && error.message.contains("widget")) }
        do {
            _ = try ResourceRef(parsing: "default//w")
            Issue.record("a malformed resource was accepted")
        } catch { #expect(error.reason == .malformed) }
    }

    /// Every report travels exactly as KubeEdge's edge sends it (resource string, operation).
    @Test func reportsEncodeToKubeEdgesRoutes() throws {
        let part = InventoryPart(session: "s", part: 1, parts: 1, items: [InventoryItem(key: "default/pod/p", uid: "u", resourceVersion: 3)])
        let cases: [(UpstreamReport, String, Operation)] = [
            (.nodeRegistration(name: "n1", node: ["kind": "Node"]), "default/node/n1", .insert),
            (.nodeStatus(name: "n1", content: ["status": [:]]), "default/nodestatus/n1", .update),
            (.podStatus(namespace: "ns", name: "p", content: ["UID": "u"]), "ns/podstatus/p", .update),
            (.pod(namespace: "ns", name: "p", operation: .delete, content: ["preconditions": ["uid": "u"]]), "ns/pod/p", .delete),
            (.event(namespace: "ns", name: "e1", event: ["kind": "Event"]), "ns/event/e1", .insert),
            (.lease(name: "n1", operation: .update, lease: ["kind": "Lease"]), "kube-node-lease/lease/n1", .update),
            (.lease(name: "n1", operation: .query, lease: .null), "kube-node-lease/lease/n1", .query),
            (.query(ResourceRef(namespace: "ns", kind: .configMap, name: "c"), content: .null), "ns/configmap/c", .query),
            (.deviceStatus(report: ["items": []]), "null/devicestatus", .update),
            (.inventory(node: "n1", part), "null/objectsync/n1", .query),
        ]
        for (report, resource, operation) in cases {
            let m = report.message(source: MessageSource.edged)
            #expect(m.route.resource == resource)
            #expect(m.route.operation == operation)
            #expect(m.route.group == "resource")
            // Through the wire and back: the same report.
            let back = try Message(bytes: m.encoded())
            #expect(try UpstreamReport(back) == report)
        }
        #expect(part.message(node: "n1").route.source == "metamanager")
        #expect(part.message(node: "n1").content["items"].arrayValue?.first?["resourceVersion"] == "3")
    }

    @Test func messagesNoComponentHandlesDecodeToNothing() throws {
        func m(_ op: Operation, _ resource: String, group: String = "resource") -> Message {
            Message(route: Route(source: "edged", group: group, operation: op, resource: resource), content: [:])
        }
        #expect(try UpstreamReport(m(.delete, "default/node/n1")) == nil)
        #expect(try UpstreamReport(m(.insert, "default/configmap/c")) == nil)
        // edgecore's requests come in group `meta` and are decoded as the same reports.
        #expect(try UpstreamReport(m(.insert, "null/node/n1", group: "meta")) == .nodeRegistration(name: "n1", node: [:]))
        #expect(try UpstreamReport(m(.patch, "null/nodepatch/n1", group: "meta")) == .nodePatch(name: "n1", content: [:]))
        #expect(try UpstreamReport(m(.query, "k8s/ca.crt", group: "meta")) == .query(ResourceRef(namespace: "k8s", kind: .caCertificate), content: [:]))
        #expect(try UpstreamReport(m(.query, "ns/serviceaccounttoken/default", group: "meta"))
                == .query(ResourceRef(namespace: "ns", kind: .serviceAccountToken, name: "default"), content: [:]))
        #expect(try UpstreamReport(m(.update, "default/podstatus/p", group: "user")) == nil)
        #expect(throws: ProtocolError.self) { try UpstreamReport(m(.query, "null/objectsync/n1")) }  // no inventory content
        #expect(throws: ProtocolError.self) { try UpstreamReport(m(.update, "nonsense")) }
    }

    /// An operation outside the vocabulary (edgecore's task manager sends `UpdateNodeActionStatus`)
    /// is its own reason, so a connection can skip it instead of closing.
    @Test func unknownOperationsAreTheirOwnReason() throws {
        let wire = #"{"header":{"msg_id":"1","timestamp":1},"route":{"source":"taskmanager","group":"resource","operation":"UpdateNodeActionStatus","resource":"x"},"content":{}}"#
        do {
            _ = try Message(bytes: Array(wire.utf8))
            Issue.record("an unknown operation was accepted")
        } catch { #expect(error.reason == .unknownOperation) }
    }

    /// The answers edgecore waits for, shaped as KubeEdge's edgecontroller shapes them.
    @Test func responsesEchoTheRequest() throws {
        let request = Message(id: "req-1", route: Route(source: "edged", group: "meta", operation: .insert, resource: "null/node/n1"), content: [:])
        let r = request.response(content: ["Object": ["metadata": ["name": "n1"]], "Err": .null], resourceVersion: "5")
        #expect(r.parentID == "req-1" && r.route.operation == .response && r.route.group == "resource")
        #expect(r.route.source == "edgecontroller" && r.route.resource == "null/node/n1" && r.resourceVersion == "5")
        #expect(!r.isAck)
    }

    @Test func objectSyncsRoundTripAndRefuseReports() throws {
        let sync = ObjectSync(ref: ResourceRef(namespace: "default", kind: .pod, name: "p"), change: .update, resourceVersion: "7",
                              object: ["metadata": ["name": "p"]])
        let m = sync.message
        #expect(m.route.source == "edgecontroller" && m.route.operation == .update && m.route.resource == "default/pod/p")
        #expect(m.resourceVersion == "7")
        #expect(try ObjectSync(Message(bytes: m.encoded())) == sync)
        #expect(try ObjectSync(Message(route: Route(source: "edgecontroller", group: "resource", operation: .response, resource: "default/pod/p"),
                                       content: [:])).change == .update)
        do {
            _ = try ObjectSync(Message(route: Route(source: "x", group: "resource", operation: .update, resource: "default/podstatus/p"), content: [:]))
            Issue.record("a report was taken for an object")
        } catch { #expect(error.reason == .unknownKind) }
        #expect(throws: ProtocolError.self) {
            try ObjectSync(Message(route: Route(source: "x", group: "resource", operation: .keepalive, resource: "default/pod/p"), content: [:]))
        }
        // A query or error reply about a synced kind changes nothing: no object, and no error (acked).
        let query = Message(route: Route(source: "x", group: "resource", operation: .query, resource: "default/pod/p"), content: [:])
        #expect(try ObjectSync.change(in: query) == nil)
        #expect(throws: ProtocolError.self) { try ObjectSync.change(in: Message(route: Route(source: "x", group: "resource", operation: .update,
                                                                                              resource: "default/widget/w"), content: [:])) }
    }
}
