/// The identity of an object held as JSON (empty when absent): what controllers key and log by.
extension JSON {
    public var name: String { self["metadata"]["name"].stringValue ?? "" }
    public var namespace: String { self["metadata"]["namespace"].stringValue ?? "" }
    public var uid: String { self["metadata"]["uid"].stringValue ?? "" }
    /// Whether the object has a deletionTimestamp (finalizers hold it).
    public var isDeleting: Bool { !self["metadata"]["deletionTimestamp"].isNull }
}
