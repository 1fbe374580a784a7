#!/usr/bin/env python3
"""Checks the package's architecture (CI; stdlib only, reads files, builds nothing).

The target graph is read from Package.swift (name, path, quoted dependencies; `.product(...)`
dependencies are external and ignored) and from the `import` lines of every target's .swift files,
so an undeclared or transitive import counts like a declared dependency. Targets live at
Sources/<Side>/<Target> or Tests/<Side>/<Target>; rules 1-4 apply to targets under Sources/.

  1. Cloud must not use Edge or Devices; Edge and Devices must not use Cloud.
  2. Shared layers (Kube, Channel, Generated, Support) use none of Cloud, Edge, Devices,
     Operations, Tools, Executables.
  3. Nothing under Sources/ uses a target under Tests/ (TestSupport included).
  4. Operations uses no Tools or Executables target.
  5. Executables hold no logic: only imports, @main types, ArgumentParser commands/option groups
     with @Option/@Flag/@Argument/@OptionGroup properties, `static let configuration`, and
     run()/validate()/main() of at most 40 lines; no other func/init, class/actor, loop,
     FileManager, Process(, getaddrinfo, socket(, fopen.
  6. Every .swift file under Sources/Generated is *.pb.swift / *.grpc.swift or says "generated" /
     "DO NOT EDIT" in a comment within its first 5 lines.
  Also: every Sources/<Side> folder is a known side (failure); a target path that does not exist,
  an orphan folder, an import that is neither a target nor a known module (warnings).

Usage: scripts/check-structure.py [--root DIR]    (exit 0: no violations, 1: violations, 2: error)
"""
import argparse
import bisect
import os
import re
import sys

SIDES = {"Kube", "Channel", "Generated", "Support", "Cloud", "Edge", "Devices", "Operations", "Tools",
         "Executables"}
SHARED = {"Kube", "Channel", "Generated", "Support"}
EDGE_SIDE = {"Edge", "Devices"}
NOT_FOR_SHARED = {"Cloud", "Edge", "Devices", "Operations", "Tools", "Executables"}
AP_PROTOCOLS = {"ParsableCommand", "AsyncParsableCommand", "ParsableArguments", "ExpressibleByArgument",
                "EnumerableFlag"}
AP_WRAPPERS = {"Option", "Flag", "Argument", "OptionGroup"}
ALLOWED_FUNCS = {"run", "validate", "main"}
MAX_BODY_LINES = 40
# Modules of the toolchain (not declared in Package.swift); imports of anything else that is not a
# target or a declared product are reported as warnings.
TOOLCHAIN_MODULES = {
    "Swift", "_Concurrency", "_StringProcessing", "Foundation", "FoundationEssentials",
    "FoundationInternationalization", "FoundationNetworking", "FoundationXML", "CoreFoundation",
    "Dispatch", "Synchronization", "Observation", "Distributed", "RegexBuilder", "Testing", "XCTest",
    "Glibc", "Musl", "Darwin", "Android", "Bionic", "WASILibc", "WinSDK", "ucrt", "CRT", "os",
    "Cxx", "CxxStdlib", "SwiftShims", "PackageDescription"}

STRING_START = re.compile(r'(#*)("""|")')
CODE_STOP = re.compile(r'[/"#()]')


def lex(text):
    """Splits Swift source into code, string and comment characters (nested /* */, raw and
    multi-line strings, interpolation). Returns three texts as long as `text`, newlines kept:
    code only; code and strings; comments only."""
    n, i, stack, segs = len(text), 0, [], []  # stack: ['code', parens] | ['str', hashes, multi]
    while i < n:
        top = stack[-1] if stack else None
        if top is None or top[0] == "code":
            m = CODE_STOP.search(text, i)
            if not m:
                break
            i = m.start()
            if text.startswith("//", i):
                j = text.find("\n", i)
                j = n if j < 0 else j
                segs.append((i, j, "M"))
                i = j
            elif text.startswith("/*", i):
                depth, j = 1, i + 2
                while j < n and depth:
                    if text.startswith("/*", j):
                        depth, j = depth + 1, j + 2
                    elif text.startswith("*/", j):
                        depth, j = depth - 1, j + 2
                    else:
                        j += 1
                segs.append((i, j, "M"))
                i = j
            elif text[i] in '#"' and STRING_START.match(text, i):
                m = STRING_START.match(text, i)
                stack.append(["str", len(m.group(1)), m.group(2) == '"""'])
                segs.append((i, m.end(), "S"))
                i = m.end()
            else:
                if top is not None and text[i] == "(":
                    top[1] += 1
                elif top is not None and text[i] == ")":
                    top[1] -= 1
                    if top[1] == 0:
                        stack.pop()
                i += 1
        else:
            hashes, multi = top[1], top[2]
            close, esc = ('"""' if multi else '"') + "#" * hashes, "\\" + "#" * hashes
            j = i
            while j < n and text[j] not in '"\\\n':
                j += 1
            segs.append((i, j, "S"))
            i = j
            if i >= n:
                break
            if text.startswith(close, i):
                segs.append((i, i + len(close), "S"))
                i += len(close)
                stack.pop()
            elif text.startswith(esc, i):
                k = i + len(esc)
                if k < n and text[k] == "(":  # interpolation: code until the matching ")"
                    segs.append((i, k, "S"))
                    stack.append(["code", 1])
                    i = k + 1
                else:
                    segs.append((i, min(k + 1, n), "S"))
                    i = k + 1
            elif text[i] == "\n" and not multi:  # unterminated literal: recover at the line end
                stack.pop()
                i += 1
            else:
                segs.append((i, i + 1, "S"))
                i += 1
    blank = lambda s: re.sub(r"[^\n]", " ", s)
    out = {"C": [], "CS": [], "M": []}
    pos = 0
    for a, b, kind in segs:
        if a > pos:
            chunk = text[pos:a]
            out["C"].append(chunk), out["CS"].append(chunk), out["M"].append(blank(chunk))
        if b > a:
            chunk = text[a:b]
            out["C"].append(blank(chunk))
            out["CS"].append(chunk if kind == "S" else blank(chunk))
            out["M"].append(chunk if kind == "M" else blank(chunk))
        pos = max(pos, b)
    chunk = text[pos:]
    out["C"].append(chunk), out["CS"].append(chunk), out["M"].append(blank(chunk))
    return "".join(out["C"]), "".join(out["CS"]), "".join(out["M"])


class Lines:
    def __init__(self, text):
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, offset):
        return bisect.bisect_right(self.starts, offset)


def matching(code, open_index):
    """Index of the bracket closing the one at open_index (code: strings and comments blanked)."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    depth = 0
    for k in range(open_index, len(code)):
        c = code[k]
        if c in pairs:
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return k
    return len(code) - 1


def top_level_args(code, start, end, values=None):
    """(label, value_start, value_end) of the comma-separated arguments in code[start:end]
    (code: strings and comments blanked; values: the same text with strings kept)."""
    args, depth, a = [], 0, start
    for k in range(start, end + 1):
        c = code[k] if k < end else ","
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            m = re.match(r"\s*([A-Za-z_]\w*)\s*:", code[a:k])
            if m:
                args.append((m.group(1), a + m.end(), k))
            elif (values or code)[a:k].strip():
                args.append((None, a, k))
            a = k + 1
    return args


def parse_package(path):
    """Targets ({name: {kind, line, path, deps: [(name, line)]}}) and external product names."""
    text = open(path, encoding="utf-8").read()
    code, cws, _ = lex(text)
    lines = Lines(text)
    targets = {}
    products = set(re.findall(r'\.product\s*\(\s*name:\s*"([^"]+)"', cws))
    pm = re.search(r"\bPackage\s*\(", code)
    if not pm:
        return targets, products
    args = top_level_args(code, pm.end(), matching(code, pm.end() - 1))
    for label, a, b in args:
        if label != "targets" or code.find("[", a, b) < 0:
            continue
        lb = code.find("[", a, b)
        for _, ea, eb in top_level_args(code, lb + 1, matching(code, lb)):
            m = re.match(r"\s*\.(\w+)\s*\(", code[ea:eb])
            if not m:
                continue
            open_i = ea + m.end() - 1
            t = {"kind": m.group(1), "line": lines.line(ea + m.start(1)), "path": None, "deps": []}
            for label2, va, vb in top_level_args(code, open_i + 1, matching(code, open_i)):
                value = cws[va:vb].strip()
                if label2 == "name":
                    t["name"] = value.strip('"')
                elif label2 == "path":
                    t["path"] = value.strip('"').rstrip("/")
                elif label2 == "dependencies" and code.find("[", va, vb) >= 0:
                    db_ = code.find("[", va, vb)
                    for _, da, db in top_level_args(code, db_ + 1, matching(code, db_), cws):
                        item = cws[da:db]
                        dm = (re.match(r'\s*"([^"]+)"', item)
                              or re.match(r'\s*\.(?:target|byName)\s*\(\s*name:\s*"([^"]+)"', item))
                        if dm:
                            t["deps"].append((dm.group(1), lines.line(da + dm.start(1))))
            if "name" in t:
                targets[t["name"]] = t
    return targets, products


IMPORT = re.compile(r"^[ \t]*(?:@\w+(?:\([^)\n]*\))?[ \t]+)*(?:(?:public|package|internal|fileprivate|private|open)[ \t]+)?"
                    r"import[ \t]+(?:(?:typealias|struct|class|enum|protocol|let|var|func)[ \t]+)?([A-Za-z_]\w*)", re.M)


def swift_files(directory):
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for f in sorted(filenames):
            if f.endswith(".swift"):
                yield os.path.join(dirpath, f)


# --- rule 5: executables ------------------------------------------------------------------------

TOKEN = re.compile(r"`[^`\n]*`|@?[A-Za-z_]\w*|->|\S")
TYPE_KEYWORDS = {"struct", "enum", "extension", "class", "actor", "protocol"}
DECL_KEYWORDS = TYPE_KEYWORDS | {"func", "init", "deinit", "subscript", "var", "let"}
MODIFIERS = {"public", "private", "fileprivate", "internal", "package", "open", "static", "final", "lazy",
             "mutating", "nonmutating", "nonisolated", "override", "weak", "unowned", "indirect", "convenience",
             "required", "dynamic", "isolated", "consuming", "borrowing", "distributed"}
CLASS_MODIFIER_NEXT = {"func", "var", "let", "subscript", "init", "override", "final", "static"}
LOOP = re.compile(r"(?<![\w.])(?:for|while)\s(?!\s*:)|(?<![\w.])repeat\s*\{")
BANNED = re.compile(r"\bFileManager\b|\bProcess\s*\(|\bgetaddrinfo\b|\bsocket\s*\(|\bfopen\b")


def command_type_names(code):
    """Names of the types declared as ArgumentParser commands/option groups or @main in a file."""
    names = set()
    for m in re.finditer(r"\b(struct|enum|class|actor|extension)\s+([A-Za-z_][\w.]*)([^{};]*)\{", code):
        before = code[max(0, m.start() - 200):m.start()]
        before = re.split(r"[{};]", before)[-1]
        if set(re.findall(r"\w+", m.group(3))) & AP_PROTOCOLS or re.search(r"@main\b", before):
            names.add(m.group(2).split(".")[-1])
    return names


def check_executable_file(rel, text, allowed_types, report):
    code, cws, _ = lex(text)
    lines = Lines(text)
    for ln, line in enumerate(code.split("\n"), 1):
        for m in LOOP.finditer(line):
            report(rel, ln, 5, f"loop `{m.group(0).strip()}`: executables hold no logic")
        for m in BANNED.finditer(line):
            report(rel, ln, 5, f"uses `{m.group(0).strip()}`: executables hold no logic")
    tokens = [(m.group(0), m.start()) for m in TOKEN.finditer(code)]
    # scope: [kind, name, allowed, parens, head, start_offset]
    stack = [["file", None, True, 0, [], 0]]
    i = 0
    while i < len(tokens):
        tok, off = tokens[i]
        ln = lines.line(off)
        s = stack[-1]
        kind, head = s[0], s[4]
        prev = tokens[i - 1][0] if i else None
        nxt = tokens[i + 1][0] if i + 1 < len(tokens) else None
        if tok == "#" and nxt in ("if", "elseif", "else", "endif", "warning", "error", "sourceLocation"):
            while i + 1 < len(tokens) and lines.line(tokens[i + 1][1]) == ln:
                i += 1
            i += 1
            continue
        if tok in ("(", "["):
            s[3] += 1
        elif tok in (")", "]"):
            s[3] -= 1
        elif tok == "{":
            new = ["code", None, False, 0, [], off]
            if s[3] == 0 and kind in ("file", "type"):
                words = [t for t, _ in head]
                decl = next((k for k in reversed(range(len(words))) if words[k] in DECL_KEYWORDS
                             and (k == 0 or words[k - 1] != ".")), None)
                if decl is not None:
                    kw = words[decl]
                    name = words[decl + 1] if decl + 1 < len(words) else "?"
                    if kw in TYPE_KEYWORDS:
                        k = decl + 1
                        while k + 2 < len(words) and words[k + 1] == ".":
                            k += 2
                        name = words[k] if k < len(words) else "?"
                        ok = (kw in ("struct", "enum", "extension") and s[2] and
                              (set(words[decl + 1:]) & AP_PROTOCOLS or "@main" in words[:decl]
                               or (kw == "extension" and name in allowed_types)))
                        if not ok and s[2] and kw not in ("class", "actor"):  # class/actor: below
                            what = "extension of " + name if kw == "extension" else f"{kw} {name}"
                            report(rel, lines.line(head[decl][1]), 5,
                                   f"{what} is not an ArgumentParser command/option group or @main type")
                        new = ["type", name, bool(ok), 0, [], off]
                    elif kw in ("func", "init", "deinit", "subscript"):
                        new = ["func", name if kw == "func" else kw, s[2], 0, [], off]
                    else:
                        new = ["prop", name, s[2], 0, [], off]
            elif kind in ("func", "code", "prop"):
                new = ["code", None, s[2], 0, [], off]
            if s[3] != 0:
                new[0] = "code"
            stack.append(new)
            i += 1
            continue
        elif tok == "}":
            if len(stack) > 1:
                done = stack.pop()
                if done[0] == "func":
                    body = cws[done[5] + 1:off]
                    count = sum(1 for l in body.split("\n") if l.strip())
                    if count > MAX_BODY_LINES:
                        report(rel, lines.line(done[5]), 5, f"{done[1]}() body has {count} lines (at most {MAX_BODY_LINES})")
                if stack[-1][3] == 0:
                    stack[-1][4] = []
            i += 1
            continue
        elif tok == ";":
            s[4] = []
            i += 1
            continue
        # declarations (reserved keywords; `actor` and `class` checked by position)
        at_decl = s[3] == 0 and kind in ("file", "type")
        if tok == "class" and prev != "." and nxt not in CLASS_MODIFIER_NEXT and nxt and re.match(r"[A-Za-z_]", nxt):
            report(rel, ln, 5, f"class {nxt}: executables declare no classes")
        elif (tok == "actor" and nxt and re.match(r"[A-Za-z_]\w*$", nxt) and nxt not in ("in", "as", "is")
              and (prev is None or prev in MODIFIERS or prev in "{};" or prev.startswith("@") or prev == ")"
                   or lines.line(tokens[i - 1][1]) != ln)
              and (at_decl or (i + 2 < len(tokens) and tokens[i + 2][0] in ("{", ":", "<")))):
            report(rel, ln, 5, f"actor {nxt}: executables declare no actors")
        elif tok == "func" and prev != "." and (kind != "type" or s[2]):  # (a rejected type is reported once)
            name = nxt or "?"
            if kind != "type" or name not in ALLOWED_FUNCS:
                where = " at file scope" if kind == "file" else (" nested in a function" if kind != "type" else "")
                report(rel, ln, 5, f"func {name}(){where}: executables may only declare run(), validate() and main()")
        elif tok in ("init", "deinit", "subscript") and at_decl and prev != "." and kind == "type" and s[2]:
            report(rel, ln, 5, f"{tok} declaration: executables may only declare run(), validate() and main()")
        elif tok in ("var", "let") and at_decl and prev != ".":
            name = nxt or "?"
            if kind == "file":
                report(rel, ln, 5, f"global `{tok} {name}`: executables hold no logic")
            elif s[2]:
                attrs, mods, k, depth = set(), set(), len(head) - 1, 0
                while k >= 0:
                    w = head[k][0]
                    if w in (")", "]"):
                        depth += 1
                    elif w in ("(", "["):
                        depth -= 1
                    elif depth == 0:
                        if w.startswith("@"):
                            attrs.add(w[1:])
                        elif w in MODIFIERS:
                            mods.add(w)
                        else:
                            break
                    k -= 1
                if not (attrs & AP_WRAPPERS or (tok == "let" and name == "configuration" and "static" in mods)):
                    report(rel, ln, 5, f"property `{name}` is not @Option/@Flag/@Argument/@OptionGroup or `static let configuration`")
        elif kind == "file" and s[3] == 0:
            if tok == "import":
                while i + 1 < len(tokens) and lines.line(tokens[i + 1][1]) == ln:
                    i += 1
                i += 1
                continue
            if not head and not tok.startswith("@") and tok not in MODIFIERS | DECL_KEYWORDS | {"typealias"}:
                report(rel, ln, 5, f"top-level code `{tok}`: executables hold no logic")
        elif kind in ("func", "code", "prop") and tok in ("struct", "enum", "extension", "protocol") and prev != ".":
            report(rel, ln, 5, f"local {tok} {nxt}: executables hold no logic")
        s[4].append((tok, off))
        i += 1


# --- main ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description="Checks the package's architecture (see the script's doc).")
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    help="package root (default: the parent of this script's folder)")
    root = ap.parse_args().root
    package = os.path.join(root, "Package.swift")
    if not os.path.isfile(package):
        print(f"structure: no Package.swift in {root}", file=sys.stderr)
        return 2
    targets, products = parse_package(package)
    if not targets:
        print("structure: no targets found in Package.swift", file=sys.stderr)
        return 2
    violations, warnings = [], []

    def report(rel, line, rule, msg):
        loc = f"{rel}:{line}" if line else rel
        v = (rel, line, f"{loc}: [rule {rule}] {msg}" if rule else f"{loc}: [layout] {msg}")
        if v not in violations:
            violations.append(v)

    def warn(rel, line, msg):
        warnings.append(f"warning: {rel}:{line}: {msg}" if line else f"warning: {rel}: {msg}")

    # layout: sides and target paths
    for base in ("Sources",):
        d = os.path.join(root, base)
        for side in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if os.path.isdir(os.path.join(d, side)) and side not in SIDES:
                report(f"{base}/{side}", 0, 0, f"unknown side `{side}` (known: {', '.join(sorted(SIDES))})")
    paths = set()
    for name, t in targets.items():
        p = t["path"] or ("Tests/" if t["kind"] == "testTarget" else "Sources/") + name
        t["path"] = p
        paths.add(p)
        parts = p.split("/")
        t["root"] = parts[0]
        t["side"] = parts[1] if len(parts) >= 3 and parts[0] in ("Sources", "Tests") else None
        if t["side"] is None:
            report("Package.swift", t["line"], 0, f"target {name}: path `{p}` is not Sources/<Side>/<Target> or Tests/<Side>/<Target>")
        elif t["root"] == "Sources" and t["side"] not in SIDES:
            report("Package.swift", t["line"], 0, f"target {name}: unknown side `{t['side']}`")
        if not os.path.isdir(os.path.join(root, p)):
            warn("Package.swift", t["line"], f"target {name}: path `{p}` does not exist")
    for base in ("Sources", "Tests"):
        for side in sorted(os.listdir(os.path.join(root, base))) if os.path.isdir(os.path.join(root, base)) else []:
            sd = os.path.join(root, base, side)
            for sub in sorted(os.listdir(sd)) if os.path.isdir(sd) else []:
                rel = f"{base}/{side}/{sub}"
                if os.path.isdir(os.path.join(root, rel)) and rel not in paths and not any(q.startswith(rel + "/") for q in paths):
                    warn(rel, 0, "folder is not the path of any target in Package.swift")

    # the graph: declared dependencies and imports
    known_modules = set(targets) | products | TOOLCHAIN_MODULES
    edges = {}  # (src, dst) -> {"declared": line, "imported": (rel, line)}
    unknown = {}
    texts = {}
    for name, t in targets.items():
        for dep, line in t["deps"]:
            if dep in targets and dep != name:
                edges.setdefault((name, dep), {}).setdefault("declared", line)
            elif dep not in targets:
                warn("Package.swift", line, f"target {name}: dependency `{dep}` is not a target")
        d = os.path.join(root, t["path"])
        for f in swift_files(d) if os.path.isdir(d) else []:
            rel = os.path.relpath(f, root)
            text = open(f, encoding="utf-8", errors="replace").read()
            texts[rel] = (name, text)
            code = lex(text)[0]
            lines = Lines(code)
            for m in IMPORT.finditer(code):
                mod, line = m.group(1), lines.line(m.start(1))
                if mod in targets and mod != name:
                    edges.setdefault((name, mod), {}).setdefault("imported", (rel, line))
                elif mod not in known_modules:
                    unknown.setdefault((name, mod), (rel, line))
    for (name, mod), (rel, line) in sorted(unknown.items()):
        warn(rel, line, f"target {name} imports `{mod}`: not a target, a declared product or a toolchain module")

    def is_test(t):
        return t["root"] == "Tests" or t.get("name") == "TestSupport"

    for (src, dst), how in sorted(edges.items()):
        s, d = targets[src], targets[dst]
        if s["root"] != "Sources" or s["side"] is None or d["side"] is None:
            continue
        ss, ds = s["side"], d["side"]
        rule = None
        if is_test(d) or dst == "TestSupport":
            rule, why = 3, f"{ss} target {src} uses test target {dst} ({d['path']})"
        elif ss == "Cloud" and ds in EDGE_SIDE or ss in EDGE_SIDE and ds == "Cloud":
            rule, why = 1, f"{ss} target {src} uses {ds} target {dst}"
        elif ss in SHARED and ds in NOT_FOR_SHARED:
            rule, why = 2, f"shared layer {ss} target {src} uses {ds} target {dst}"
        elif ss == "Operations" and ds in ("Tools", "Executables"):
            rule, why = 4, f"Operations target {src} uses {ds} target {dst}"
        if rule:
            if "imported" in how:
                rel, line = how["imported"]
                via = "import" + (f", declared at Package.swift:{how['declared']}" if "declared" in how else ", not declared in Package.swift")
            else:
                rel, line, via = "Package.swift", how["declared"], "declared dependency"
            report(rel, line, rule, f"{why} ({via})")

    # rule 5 (executables) and rule 6 (generated)
    for rel, (name, text) in sorted(texts.items()):
        t = targets[name]
        if t["root"] == "Sources" and t["side"] == "Executables":
            allowed = set()
            for r2, (n2, tx2) in texts.items():
                if n2 == name:
                    allowed |= command_type_names(lex(tx2)[0])
            check_executable_file(rel, text, allowed, report)
    gen = os.path.join(root, "Sources", "Generated")
    for f in swift_files(gen) if os.path.isdir(gen) else []:
        rel = os.path.relpath(f, root)
        if f.endswith((".pb.swift", ".grpc.swift")):
            continue
        head = "\n".join(open(f, encoding="utf-8", errors="replace").read().split("\n")[:5])
        comments = lex(head)[2]
        if not re.search(r"generated|do not edit", comments, re.I):
            report(rel, 1, 6, 'a generated file must say "Generated" or "DO NOT EDIT" in a comment within its first 5 lines')

    for w in warnings:
        print(w)
    for _, _, v in sorted(violations):
        print(v)
    summary = f"structure: {len(targets)} targets, {len(violations)} violation{'s' if len(violations) != 1 else ''}"
    if warnings:
        summary += f", {len(warnings)} warning{'s' if len(warnings) != 1 else ''}"
    print(summary)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
