import Testing
@testable import KubeAPI

@Suite struct SelectorTests {
    let labels = ["app": "web", "tier": "front", "v": "3"]

    @Test(arguments: [
        ("app=web", true), ("app==web", true), ("app!=web", false), ("app in (web,db)", true),
        ("app notin (web)", false), ("tier", true), ("!tier", false), ("missing", false), ("!missing", true),
        ("app=web,tier=back", false), ("v>2", true), ("v<3", false), ("", true), ("app in(web)", true),
    ])
    func labelSelectors(_ text: String, _ expected: Bool) throws {
        #expect(try LabelSelector.parse(text).matches(labels) == expected)
    }

    @Test(arguments: ["app=", "=web", "app in web", "a b", "app=we b"])
    func invalidLabelSelectors(_ text: String) {
        if text == "app=" { #expect((try? LabelSelector.parse(text)) != nil); return }
        #expect(throws: StatusError.self) { try LabelSelector.parse(text) }
    }

    @Test func fieldSelectors() throws {
        let fs = try FieldSelector.parse("spec.nodeName=n1,status.phase!=Failed")
        #expect(fs.matches(["spec.nodeName": "n1", "status.phase": "Running"]))
        #expect(!fs.matches(["spec.nodeName": "n1", "status.phase": "Failed"]))
        #expect(!fs.matches(["spec.nodeName": "n2"]))
        #expect(throws: StatusError.self) { try FieldSelector.parse("nonsense") }
    }

    @Test func selectorFromObject() throws {
        let sel: JSON = ["matchLabels": ["app": "web"], "matchExpressions": [["key": "tier", "operator": "In", "values": ["front"]]]]
        #expect(try LabelSelector.from(object: sel).matches(labels))
        #expect(try LabelSelector.from(object: sel).description == "app=web,tier in (front)")
    }

    @Test func names() {
        #expect(isDNS1123Subdomain("web-1.example"))
        #expect(!isDNS1123Subdomain("Web"))
        #expect(!isDNS1123Label("a.b"))
        #expect(isValidLabelKey("node-role.kubernetes.io/edge"))
        #expect(!isValidLabelKey("-bad"))
    }
}
