//! Compiles an Avro schema (JSON text) into a flat arena of nodes.
//!
//! Why an arena: named types may be referenced many times (and even recursively), so the
//! tree is really a graph; nodes refer to each other by index, which keeps the walkers free
//! of reference counting and lets a recursive type point back at itself.
//!
//! Name resolution follows fastavro 1.13 (`schema_name` / `_parse_schema`): a dotted name is a
//! full name, otherwise the enclosing namespace (the `namespace` attribute, or the namespace
//! of a dotted enclosing name) is prefixed; a reference is resolved the same way, without
//! falling back to the bare name.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde_json::Value;

pub type NodeId = usize;

/// Unit of a timestamp logical type (`long` base type only, as fastavro).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Millis,
    Micros,
}

pub struct Field {
    pub name: String,
    /// Interned once per schema so that dict look-ups and inserts reuse the cached hash.
    pub key: Py<PyString>,
    pub node: NodeId,
    /// The JSON default converted once to a Python object; written through the normal path
    /// when the field is missing from the record, exactly like fastavro's `datum.get(name, default)`.
    pub default: Option<Py<PyAny>>,
    /// fastavro's `"null" in field["type"]` test: a missing field without default is written
    /// as None instead of raising.
    pub nullish: bool,
    /// The key object last seen for this field in an encoded dict when it was not `key`
    /// itself (a strong reference, so the address cannot be reused by another object).
    /// Why: dicts made by fastavro or json carry their own, non-interned key strings; matching
    /// them by pointer avoids a hash-table probe plus a string compare per field.
    pub alt_key: AtomicPtr<pyo3::ffi::PyObject>,
}

impl Field {
    /// Does dict key `k` name this field? Remembers a matching foreign key object.
    ///
    /// # Safety
    /// GIL held; `k` a valid object.
    #[inline(always)]
    pub unsafe fn matches_key(&self, k: *mut pyo3::ffi::PyObject) -> bool {
        if k == self.key.as_ptr() || k == self.alt_key.load(Ordering::Relaxed) {
            return true;
        }
        self.matches_key_slow(k)
    }

    #[inline(never)]
    unsafe fn matches_key_slow(&self, k: *mut pyo3::ffi::PyObject) -> bool {
        use pyo3::ffi;
        if ffi::PyUnicode_Check(k) == 0 {
            return false;
        }
        let mut n: ffi::Py_ssize_t = 0;
        let p = ffi::PyUnicode_AsUTF8AndSize(k, &mut n);
        if p.is_null() {
            ffi::PyErr_Clear();
            return false;
        }
        if std::slice::from_raw_parts(p.cast::<u8>(), n as usize) != self.name.as_bytes() {
            return false;
        }
        ffi::Py_INCREF(k);
        let old = self.alt_key.swap(k, Ordering::Relaxed);
        if !old.is_null() {
            ffi::Py_DECREF(old);
        }
        true
    }
}

impl Drop for Field {
    fn drop(&mut self) {
        let p = *self.alt_key.get_mut();
        if !p.is_null() {
            // Fields are dropped with the Schema, by its deallocator, with the GIL held.
            unsafe { pyo3::ffi::Py_DECREF(p) }
        }
    }
}

pub enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    /// `long` with a timestamp logical type; decoded to `datetime` like fastavro.
    Timestamp {
        unit: TimeUnit,
        local: bool,
    },
    Fixed {
        name: String,
        size: usize,
    },
    Enum {
        name: String,
        symbols: Vec<String>,
        py_symbols: Vec<Py<PyString>>,
    },
    Array {
        items: NodeId,
    },
    Map {
        values: NodeId,
    },
    Union {
        branches: Vec<NodeId>,
        /// `(null index, other index)` when the union is exactly `null` plus one other type:
        /// the overwhelmingly common shape, given a fast path in both directions.
        simple: Option<(u8, u8)>,
        /// Branch names for fastavro's tuple notation `(name, value)`.
        names: Vec<String>,
    },
    Record {
        name: String,
        fields: Vec<Field>,
        /// `{field: None, ...}` in field order. Why: decoding copies it (a single memcpy of
        /// a presized hash table) and then overwrites the values, instead of growing a fresh
        /// dict through five resizes for a 100-field record.
        template: Py<PyDict>,
    },
}

impl Node {
    /// The Avro type name, for error messages.
    pub fn type_name(&self) -> &str {
        match self {
            Node::Null => "null",
            Node::Boolean => "boolean",
            Node::Int => "int",
            Node::Long => "long",
            Node::Float => "float",
            Node::Double => "double",
            Node::Bytes => "bytes",
            Node::String => "string",
            Node::Timestamp { .. } => "long",
            Node::Fixed { name, .. } => name,
            Node::Enum { name, .. } => name,
            Node::Array { .. } => "array",
            Node::Map { .. } => "map",
            Node::Union { .. } => "union",
            Node::Record { name, .. } => name,
        }
    }
}

pub struct Tree {
    pub nodes: Vec<Node>,
    pub root: NodeId,
    /// Lower bound of the encoded size of a value of each node, used to reject block counts
    /// that cannot fit in the bytes that remain (so an untrusted count never drives an
    /// allocation or a long loop).
    pub min_size: Vec<u64>,
    /// How the dict decoder reads a record field of each node without walking the node graph
    /// (see `decode::FieldOp`).
    pub field_ops: Vec<crate::decode::FieldOp>,
}

const PRIMS: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

struct Parser<'py> {
    py: Python<'py>,
    nodes: Vec<Node>,
    names: HashMap<String, NodeId>,
    depth: usize,
}

fn fullname(name: &str, namespace: Option<&str>, parent_ns: &str) -> (String, String) {
    // Mirrors fastavro.schema.schema_name: returns (namespace for children, full name).
    let ns = namespace.unwrap_or(parent_ns);
    if let Some((prefix, _)) = name.rsplit_once('.') {
        (prefix.to_string(), name.to_string())
    } else if !ns.is_empty() {
        (ns.to_string(), format!("{ns}.{name}"))
    } else {
        (String::new(), name.to_string())
    }
}

fn json_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => pyo3::types::PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let list = PyList::empty(py);
            for x in a {
                list.append(json_to_py(py, x)?)?;
            }
            list.into_any()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

impl<'py> Parser<'py> {
    fn push(&mut self, n: Node) -> NodeId {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn register(&mut self, full: &str, id: NodeId) -> Result<(), String> {
        if PRIMS.contains(&full) {
            return Err(format!("named type may not be called {full:?}"));
        }
        if self.names.insert(full.to_string(), id).is_some() {
            return Err(format!("redefined named type: {full}"));
        }
        Ok(())
    }

    fn parse(&mut self, v: &Value, ns: &str) -> Result<NodeId, String> {
        self.depth += 1;
        if self.depth > 256 {
            return Err("schema nested too deeply".into());
        }
        let r = self.parse_inner(v, ns);
        self.depth -= 1;
        r
    }

    fn primitive(&mut self, name: &str) -> Option<NodeId> {
        let n = match name {
            "null" => Node::Null,
            "boolean" => Node::Boolean,
            "int" => Node::Int,
            "long" => Node::Long,
            "float" => Node::Float,
            "double" => Node::Double,
            "bytes" => Node::Bytes,
            "string" => Node::String,
            _ => return None,
        };
        Some(self.push(n))
    }

    fn parse_inner(&mut self, v: &Value, ns: &str) -> Result<NodeId, String> {
        match v {
            Value::String(s) => {
                if let Some(id) = self.primitive(s) {
                    return Ok(id);
                }
                let full = if !s.contains('.') && !ns.is_empty() {
                    format!("{ns}.{s}")
                } else {
                    s.clone()
                };
                self.names
                    .get(&full)
                    .copied()
                    .ok_or_else(|| format!("unknown type {full:?}"))
            }
            Value::Array(branches) => {
                let mut ids = Vec::with_capacity(branches.len());
                let mut names = Vec::with_capacity(branches.len());
                for b in branches {
                    if b.is_array() {
                        return Err("a union may not directly contain another union".into());
                    }
                    let id = self.parse(b, ns)?;
                    if matches!(self.nodes[id], Node::Union { .. }) {
                        return Err("a union may not directly contain another union".into());
                    }
                    names.push(self.branch_name(id));
                    ids.push(id);
                }
                if ids.is_empty() {
                    return Err("empty union".into());
                }
                if ids.len() > 127 {
                    return Err("union with more than 127 branches".into());
                }
                let nulls: Vec<usize> = ids
                    .iter()
                    .enumerate()
                    .filter(|(_, &i)| matches!(self.nodes[i], Node::Null))
                    .map(|(k, _)| k)
                    .collect();
                let simple = if ids.len() == 2 && nulls.len() == 1 {
                    let n = nulls[0];
                    Some((n as u8, (1 - n) as u8))
                } else {
                    None
                };
                Ok(self.push(Node::Union { branches: ids, simple, names }))
            }
            Value::Object(o) => {
                let ty = o.get("type").ok_or("schema object without \"type\"")?;
                let ty_s = match ty {
                    Value::String(s) => s.as_str(),
                    // {"type": {...}} or {"type": [...]}: not standard Avro, but unambiguous.
                    _ => return self.parse(ty, ns),
                };
                match ty_s {
                    "record" | "error" => self.parse_record(o, ns),
                    "enum" => {
                        let name = o.get("name").and_then(Value::as_str).ok_or("enum without a name")?;
                        let (_, full) = fullname(name, o.get("namespace").and_then(Value::as_str), ns);
                        let syms = o
                            .get("symbols")
                            .and_then(Value::as_array)
                            .ok_or_else(|| format!("enum {full} without symbols"))?;
                        let mut symbols = Vec::with_capacity(syms.len());
                        let mut seen = HashSet::new();
                        for s in syms {
                            let s = s.as_str().ok_or_else(|| format!("enum {full}: symbols must be strings"))?;
                            if !seen.insert(s.to_string()) {
                                return Err(format!("enum {full}: duplicate symbol {s:?}"));
                            }
                            symbols.push(s.to_string());
                        }
                        let py_symbols = symbols.iter().map(|s| PyString::intern(self.py, s).unbind()).collect();
                        let id = self.push(Node::Enum { name: full.clone(), symbols, py_symbols });
                        self.register(&full, id)?;
                        Ok(id)
                    }
                    "fixed" => {
                        let name = o.get("name").and_then(Value::as_str).ok_or("fixed without a name")?;
                        let (_, full) = fullname(name, o.get("namespace").and_then(Value::as_str), ns);
                        let size = o
                            .get("size")
                            .and_then(Value::as_u64)
                            .ok_or_else(|| format!("fixed {full} without a valid size"))?;
                        if o.get("logicalType").and_then(Value::as_str) == Some("decimal") {
                            return Err(format!("unsupported logical type fixed/decimal ({full})"));
                        }
                        if size > (1 << 31) {
                            return Err(format!("fixed {full}: size {size} too large"));
                        }
                        let id = self.push(Node::Fixed { name: full.clone(), size: size as usize });
                        self.register(&full, id)?;
                        Ok(id)
                    }
                    "array" => {
                        let items = o.get("items").ok_or("array without items")?;
                        let items = self.parse(items, ns)?;
                        Ok(self.push(Node::Array { items }))
                    }
                    "map" => {
                        let values = o.get("values").ok_or("map without values")?;
                        let values = self.parse(values, ns)?;
                        Ok(self.push(Node::Map { values }))
                    }
                    prim if PRIMS.contains(&prim) => {
                        // fastavro keys logical types as "<type>-<logicalType>"; unknown pairs
                        // are ignored (the base type is used), known ones we cannot reproduce
                        // exactly are refused rather than decoded differently.
                        if let Some(lt) = o.get("logicalType").and_then(Value::as_str) {
                            match (prim, lt) {
                                ("long", "timestamp-micros") => {
                                    return Ok(self.push(Node::Timestamp { unit: TimeUnit::Micros, local: false }))
                                }
                                ("long", "timestamp-millis") => {
                                    return Ok(self.push(Node::Timestamp { unit: TimeUnit::Millis, local: false }))
                                }
                                ("long", "local-timestamp-micros") => {
                                    return Ok(self.push(Node::Timestamp { unit: TimeUnit::Micros, local: true }))
                                }
                                ("long", "local-timestamp-millis") => {
                                    return Ok(self.push(Node::Timestamp { unit: TimeUnit::Millis, local: true }))
                                }
                                ("int", "date")
                                | ("bytes", "decimal")
                                | ("string", "uuid")
                                | ("int", "time-millis")
                                | ("long", "time-micros") => {
                                    return Err(format!("unsupported logical type {prim}/{lt}"))
                                }
                                _ => {}
                            }
                        }
                        Ok(self.primitive(prim).expect("primitive"))
                    }
                    other => self.parse(&Value::String(other.to_string()), ns),
                }
            }
            other => Err(format!("invalid schema element {other}")),
        }
    }

    fn branch_name(&self, id: NodeId) -> String {
        match &self.nodes[id] {
            Node::Record { name, .. } | Node::Enum { name, .. } | Node::Fixed { name, .. } => name.clone(),
            other => other.type_name().to_string(),
        }
    }

    fn parse_record(&mut self, o: &serde_json::Map<String, Value>, ns: &str) -> Result<NodeId, String> {
        let name = o.get("name").and_then(Value::as_str).ok_or("record without a name")?;
        let (child_ns, full) = fullname(name, o.get("namespace").and_then(Value::as_str), ns);
        // Registered before the fields are parsed, so that a field may refer to its own record.
        let id = self.push(Node::Record { name: full.clone(), fields: Vec::new(), template: PyDict::new(self.py).unbind() });
        self.register(&full, id)?;
        let raw_fields = match o.get("fields") {
            Some(Value::Array(f)) => f.as_slice(),
            None => &[],
            Some(_) => return Err(format!("record {full}: fields must be a list")),
        };
        let mut fields = Vec::with_capacity(raw_fields.len());
        let mut seen = HashSet::new();
        for f in raw_fields {
            let fo = f.as_object().ok_or_else(|| format!("record {full}: a field must be an object"))?;
            let fname = fo
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("record {full}: field without a name"))?;
            if !seen.insert(fname.to_string()) {
                return Err(format!("record {full}: duplicate field {fname:?}"));
            }
            let ftype = fo.get("type").ok_or_else(|| format!("field {full}.{fname} without a type"))?;
            let node = self.parse(ftype, &child_ns)?;
            let nullish = match ftype {
                Value::String(s) => s.contains("null"),
                Value::Array(a) => a.iter().any(|b| b.as_str() == Some("null")),
                _ => false,
            };
            let default = match fo.get("default") {
                None => None,
                Some(d) => {
                    if !self.default_matches(d, node) {
                        return Err(format!("default value {d} of field {full}.{fname} does not match its type"));
                    }
                    Some(json_to_py(self.py, d).map_err(|e| e.to_string())?.unbind())
                }
            };
            fields.push(Field {
                name: fname.to_string(),
                key: PyString::intern(self.py, fname).unbind(),
                node,
                default,
                nullish,
                alt_key: AtomicPtr::new(std::ptr::null_mut()),
            });
        }
        let template = PyDict::new(self.py);
        for f in &fields {
            template.set_item(f.key.bind(self.py), self.py.None()).map_err(|e| e.to_string())?;
        }
        if let Node::Record { fields: slot, template: tslot, .. } = &mut self.nodes[id] {
            *slot = fields;
            *tslot = template.unbind();
        }
        Ok(id)
    }

    /// fastavro's `_default_matches_schema` (primitives checked, containers by JSON kind).
    fn default_matches(&self, d: &Value, node: NodeId) -> bool {
        match &self.nodes[node] {
            Node::Null => d.is_null(),
            Node::Boolean => d.is_boolean(),
            Node::String | Node::Bytes => d.is_string(),
            Node::Int | Node::Long => d.is_i64() || d.is_u64() || d.is_boolean(),
            Node::Float | Node::Double => {
                // fastavro: isinstance(_maybe_float(default), float)
                d.is_number() || d.is_boolean() || d.as_str().is_some_and(|s| s.trim().parse::<f64>().is_ok())
            }
            Node::Array { .. } => d.is_array(),
            Node::Map { .. } | Node::Record { .. } => d.is_object(),
            Node::Enum { .. } | Node::Fixed { .. } => d.is_string(),
            Node::Timestamp { .. } => true,
            Node::Union { branches, .. } => branches.iter().any(|&b| self.default_matches(d, b)),
        }
    }
}

fn compute_min_sizes(nodes: &[Node]) -> Vec<u64> {
    // Monotone fixpoint from 0: every intermediate value is a valid lower bound, so stopping
    // early (recursive types whose minimum is unbounded) is still safe.
    const CAP: u64 = 1 << 40;
    let mut m = vec![0u64; nodes.len()];
    for _ in 0..64 {
        let mut changed = false;
        for (i, n) in nodes.iter().enumerate() {
            let v = match n {
                Node::Null => 0,
                Node::Boolean | Node::Int | Node::Long | Node::Timestamp { .. } => 1,
                Node::Float => 4,
                Node::Double => 8,
                Node::Bytes | Node::String | Node::Enum { .. } | Node::Array { .. } | Node::Map { .. } => 1,
                Node::Fixed { size, .. } => *size as u64,
                Node::Union { branches, .. } => 1 + branches.iter().map(|&b| m[b]).min().unwrap_or(0),
                Node::Record { fields, .. } => fields.iter().map(|f| m[f.node]).sum::<u64>(),
            }
            .min(CAP);
            if v != m[i] {
                m[i] = v;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    m
}

/// Parse and compile `schema_json`. Errors are plain strings (turned into ValueError).
pub fn compile(py: Python<'_>, schema_json: &str) -> Result<Tree, String> {
    let v: Value = serde_json::from_str(schema_json).map_err(|e| format!("schema is not valid JSON: {e}"))?;
    let mut p = Parser { py, nodes: Vec::new(), names: HashMap::new(), depth: 0 };
    let root = p.parse(&v, "")?;
    let min_size = compute_min_sizes(&p.nodes);
    let field_ops = crate::decode::field_ops(&p.nodes);
    Ok(Tree { nodes: p.nodes, root, min_size, field_ops })
}
