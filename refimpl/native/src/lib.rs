//! `_native`: a schema-driven Avro binary codec (schemaless, no container) for alertbench.
//!
//! Why it exists: the codec, not the network, bounds the whole alert system (a ~130 KB Rubin
//! alert costs milliseconds in pure Python). The schema is compiled once into a Rust node
//! graph that the encoder and decoders walk directly, so there is no per-field dispatch
//! through Python. Output is byte-identical to `fastavro.schemaless_writer`, and decoded
//! dicts equal `fastavro.schemaless_reader`'s, which the tests check.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

mod columns;
mod decode;
mod encode;
mod protobuf;
mod pycache;
mod reader;
mod schema;

use columns::{CNode, Col, Plan, Store, NONE_REF};
use decode::{DErr, Decoder};
use encode::Encoder;
use reader::Cursor;

create_exception!(
    _native,
    AvroDecodeError,
    PyValueError,
    "Raised for every input that is not one complete, valid value of the schema (truncated, \
     trailing bytes, bad union/enum index, invalid UTF-8, impossible counts or lengths). \
     The message says what and at which byte offset of the input."
);
create_exception!(
    _native,
    AvroEncodeError,
    PyValueError,
    "Raised when a record does not fit the schema; the message names the field path \
     (e.g. \"diaSource.ra: expected double, got str\")."
);

/// A compiled Avro schema: encode records to schemaless Avro, decode them back, or decode a
/// batch of messages into columns.
///
/// Why a class: compiling (parsing JSON, resolving named types, interning every field name as
/// a Python string) is done once per schema; every call then only walks the compiled graph.
#[pyclass(frozen, module = "_native")]
pub struct Schema {
    tree: schema::Tree,
    /// Column plan, built on the first `decode_columns` call (most users never need it).
    plan: OnceLock<Result<Plan, String>>,
    /// Size of the last encoded record: the next output buffer is reserved at about this size,
    /// so encoding a 130 KB alert does not grow its buffer a dozen times.
    last_len: AtomicUsize,
    /// Per column, bytes of data / valid / offsets / refs per message in the last batch: the
    /// next batch reserves that much up front instead of growing each buffer ~20 times.
    col_hint: std::sync::Mutex<Vec<[usize; 4]>>,
}

/// Run `f`, turning a Rust panic into `exc` instead of letting a PanicException (which is not
/// an Exception subclass) reach Python. Nothing should panic; this is the safety net.
fn guarded<T>(what: &str, mk: fn(String) -> PyErr, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(mk(format!("internal error in {what}: {msg}")))
        }
    }
}

fn dec_err(m: String) -> PyErr {
    AvroDecodeError::new_err(m)
}

fn enc_err(m: String) -> PyErr {
    AvroEncodeError::new_err(m)
}

/// A readable view of a message: `bytes` directly, anything else through the buffer protocol.
enum Src<'py> {
    Bytes(Bound<'py, PyBytes>),
    Buf(PyBuffer<u8>),
}

impl<'py> Src<'py> {
    fn get(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Src::Bytes(b.clone()));
        }
        let buf = PyBuffer::<u8>::get(obj).map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "expected bytes, bytearray, memoryview or another byte buffer, got {}",
                obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
        })?;
        if !buf.is_c_contiguous() {
            return Err(pyo3::exceptions::PyTypeError::new_err("buffer must be C-contiguous"));
        }
        Ok(Src::Buf(buf))
    }

    fn ptr_len(&self) -> (*const u8, usize) {
        match self {
            Src::Bytes(b) => {
                let s = b.as_bytes();
                (s.as_ptr(), s.len())
            }
            Src::Buf(b) => (b.buf_ptr() as *const u8, b.len_bytes()),
        }
    }

    /// # Safety
    /// The slice is valid while `self` lives and the exporter is not mutated meanwhile.
    unsafe fn slice(&self) -> &[u8] {
        let (p, n) = self.ptr_len();
        if n == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(p, n)
        }
    }
}

fn check_offset(offset: isize, len: usize) -> PyResult<usize> {
    if offset < 0 || offset as usize > len {
        return Err(AvroDecodeError::new_err(format!("offset {offset} is outside the {len}-byte input")));
    }
    Ok(offset as usize)
}

/// Raw message slices handed to the GIL-free parser. The owning Python objects (`Src`) are
/// kept alive by the caller for the whole parse.
struct Slices(Vec<(*const u8, usize)>);
// SAFETY: the pointers refer to immutable `bytes` or to exported buffers held by the caller
// until the parse ends; the parser only reads them.
unsafe impl Send for Slices {}

#[pymethods]
impl Schema {
    /// Compile `schema_json` (an Avro schema as JSON text).
    ///
    /// Raises ValueError for invalid JSON, unknown or redefined named types, defaults that do
    /// not match their type, and logical types whose fastavro decoding we do not reproduce
    /// (decimal, uuid, date, time-millis, time-micros) — refused rather than decoded differently.
    #[new]
    fn new(py: Python<'_>, schema_json: &str) -> PyResult<Self> {
        guarded("Schema()", PyValueError::new_err, || {
            pycache::get(py)?;
            let tree = schema::compile(py, schema_json).map_err(PyValueError::new_err)?;
            Ok(Schema {
                tree,
                plan: OnceLock::new(),
                last_len: AtomicUsize::new(0),
                col_hint: std::sync::Mutex::new(Vec::new()),
            })
        })
    }

    /// Encode one record (a dict) to schemaless Avro, byte-identical to
    /// `fastavro.schemaless_writer` for every record fastavro accepts and we do not refuse.
    ///
    /// Raises AvroEncodeError naming the field path when a value does not fit its type.
    fn encode<'py>(&self, py: Python<'py>, record: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        guarded("encode", enc_err, || {
            let cache = pycache::get(py)?;
            let cap = self.last_len.load(Ordering::Relaxed);
            let mut enc = Encoder::new(&self.tree, py, cache, cap + cap / 8 + 256);
            unsafe { enc.write(self.tree.root, record.as_ptr(), 0) }.map_err(|e| AvroEncodeError::new_err(e.render()))?;
            self.last_len.store(enc.out.len(), Ordering::Relaxed);
            enc.finish()
        })
    }

    /// Decode `data[offset:]` (bytes, bytearray, memoryview or any byte buffer) to the value
    /// fastavro.schemaless_reader would return.
    ///
    /// Why `offset`: Confluent-framed messages carry a 5-byte header; passing offset=5 avoids
    /// copying a 130 KB body just to strip it. Every byte after the offset must belong to the
    /// record: trailing bytes are an AvroDecodeError, as is any malformed input. Byte offsets in
    /// error messages count from the start of `data`.
    #[pyo3(signature = (data, offset = 0))]
    fn decode(&self, py: Python<'_>, data: &Bound<'_, PyAny>, offset: isize) -> PyResult<Py<PyAny>> {
        guarded("decode", dec_err, || {
            let cache = pycache::get(py)?;
            let src = Src::get(data)?;
            let buf = unsafe { src.slice() };
            let start = check_offset(offset, buf.len())?;
            let mut dec = Decoder { t: &self.tree, cur: Cursor::new(buf, start), py, cache };
            match unsafe { dec.value(self.tree.root, 0) } {
                Ok(p) => {
                    let obj = unsafe { Bound::from_owned_ptr(py, p) }.unbind();
                    if dec.cur.pos != buf.len() {
                        return Err(AvroDecodeError::new_err(format!(
                            "{} trailing byte(s) after the record at byte {}",
                            buf.len() - dec.cur.pos,
                            dec.cur.pos
                        )));
                    }
                    Ok(obj)
                }
                Err(DErr::Avro(e)) => Err(AvroDecodeError::new_err(format!("{} at byte {}", e.msg, e.pos))),
                Err(DErr::Py(e)) => Err(e),
            }
        })
    }

    /// Decode `data[offset:]` as the Protobuf mirror of this schema (refimpl/codecs/protogen.py:
    /// every field in Avro order, numbered from 1; the root closed by the packet_end sentinel)
    /// to the dict the Python Protobuf codec returns.
    ///
    /// Why: converting a parsed Protobuf message to a dict field by field in Python is ~80% of
    /// a Protobuf subscriber's CPU; the compiled Avro tree describes the mirror completely.
    /// Malformed input (truncation, lengths past the end, wrong wire types, invalid UTF-8, a
    /// missing sentinel) is an AvroDecodeError with the byte offset.
    #[pyo3(signature = (data, offset = 0))]
    fn decode_protobuf(&self, py: Python<'_>, data: &Bound<'_, PyAny>, offset: isize) -> PyResult<Py<PyAny>> {
        guarded("decode_protobuf", dec_err, || {
            let cache = pycache::get(py)?;
            let src = Src::get(data)?;
            let buf = unsafe { src.slice() };
            let start = check_offset(offset, buf.len())?;
            let dec = protobuf::PbDecoder { t: &self.tree, py, cache };
            match unsafe { dec.root(buf, start) } {
                Ok(p) => Ok(unsafe { Bound::from_owned_ptr(py, p) }.unbind()),
                Err(DErr::Avro(e)) => Err(AvroDecodeError::new_err(format!("{} at byte {}", e.msg, e.pos))),
                Err(DErr::Py(e)) => Err(e),
            }
        })
    }

    /// Encode one record (a dict) as the Protobuf mirror of this schema, behind `prefix` (the
    /// frame), byte-identical to the generated classes' `SerializeToString()` of the message
    /// the Python Protobuf codec builds (packet_end sentinel included).
    ///
    /// Why: building that message field by field in Python cost ~5x the Avro encoder; the
    /// compiled Avro tree describes the mirror completely. Why `prefix`: the frame is written
    /// into the same buffer, so a 130 KB alert is not copied again to put 7 bytes in front.
    /// Raises AvroEncodeError naming the field path when a value does not fit.
    #[pyo3(signature = (record, prefix = None))]
    fn encode_protobuf<'py>(
        &self,
        py: Python<'py>,
        record: &Bound<'py, PyAny>,
        prefix: Option<&Bound<'py, PyBytes>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        guarded("encode_protobuf", enc_err, || {
            let cache = pycache::get(py)?;
            let cap = self.last_len.load(Ordering::Relaxed);
            let mut enc = protobuf::PbEncoder::new(&self.tree, py, cache, cap + cap / 8 + 256);
            if let Some(p) = prefix {
                enc.out.extend_from_slice(p.as_bytes());
            }
            unsafe { enc.root(record.as_ptr()) }.map_err(|e| AvroEncodeError::new_err(e.render()))?;
            self.last_len.store(enc.out.len(), Ordering::Relaxed);
            enc.finish()
        })
    }

    /// Decode a batch of messages of this schema into columns (layout in README.md):
    /// `{"__len__": N, "<dotted.path>": (kind, data, valid, offsets), ...}`.
    ///
    /// Why: no Python object is created per numeric value; each numeric column is one `bytes`
    /// of little-endian values that `numpy.frombuffer` wraps without copying. All messages are
    /// parsed with the GIL released; Python objects are built only at the end (one per column,
    /// plus one per string/bytes value). `offset` is applied to every message.
    ///
    /// `fields` (an iterable of column paths, None: all) projects the decode onto those columns:
    /// every message is still parsed and validated completely, and refused exactly as without
    /// `fields`, but only the named columns are stored and returned, plus the offsets of the
    /// arrays and maps that hold one of them. An unknown path is a KeyError.
    #[pyo3(signature = (messages, offset = 0, fields = None))]
    fn decode_columns<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyAny>,
        offset: isize,
        fields: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        guarded("decode_columns", dec_err, || self.decode_columns_inner(py, messages, offset, fields))
    }

    fn __repr__(&self) -> String {
        format!("<_native.Schema {}>", self.tree.nodes[self.tree.root].type_name())
    }
}

impl Schema {
    fn decode_columns_inner<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyAny>,
        offset: isize,
        fields: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let plan = match self.plan.get_or_init(|| columns::plan(&self.tree)) {
            Ok(p) => p,
            Err(e) => return Err(PyValueError::new_err(format!("schema cannot be decoded to columns: {e}"))),
        };
        let ncols = plan.cols.len();
        // The tree to walk and the columns it fills: the whole plan, or its projection.
        let projected: Option<(CNode, Vec<bool>)> = match fields {
            None => None,
            Some(f) if f.is_none() => None,
            Some(f) => {
                let mut want = vec![false; ncols];
                for name in f.try_iter()? {
                    let name = name?;
                    let path: &str = name.extract().map_err(|_| {
                        pyo3::exceptions::PyTypeError::new_err("fields must be column paths (str)")
                    })?;
                    match plan.cols.iter().position(|c| c.path == path) {
                        Some(i) => want[i] = true,
                        None => {
                            return Err(pyo3::exceptions::PyKeyError::new_err(format!(
                                "no column {path:?} in this schema's columns"
                            )))
                        }
                    }
                }
                let mut keep = vec![false; ncols];
                let root = columns::project(&plan.root, &want, &mut keep);
                Some((root, keep))
            }
        };
        let (root, keep): (&CNode, Option<&[bool]>) = match &projected {
            Some((r, k)) => (r, Some(k.as_slice())),
            None => (&plan.root, None),
        };
        let kept = |i: usize| keep.is_none_or(|k| k[i]);
        let cache = pycache::get(py)?;
        // Hold every message (and its buffer export) until the end.
        let seq: Vec<Bound<'py, PyAny>> = messages.try_iter()?.collect::<PyResult<_>>()?;
        let srcs: Vec<Src<'py>> = seq.iter().map(Src::get).collect::<PyResult<_>>()?;
        let mut slices = Vec::with_capacity(srcs.len());
        for (i, s) in srcs.iter().enumerate() {
            let (p, n) = s.ptr_len();
            if n >= u32::MAX as usize {
                return Err(AvroDecodeError::new_err(format!("message {i}: larger than 4 GiB")));
            }
            check_offset(offset, n).map_err(|e| AvroDecodeError::new_err(format!("message {i}: {e}")))?;
            slices.push((p, n));
        }
        let start = offset as usize;
        let slices = Slices(slices);
        let tree = &self.tree;
        let hint: Vec<[usize; 4]> = self.col_hint.lock().map(|h| h.clone()).unwrap_or_default();
        let nmsg = srcs.len();

        // Parse with the GIL released: only Rust buffers are touched.
        let specs = &plan.cols;
        // The columns of each message range parsed (one range per thread), in order: the output
        // is written from the parts directly, so nothing is copied to join them first.
        let parsed: Result<Vec<Vec<Col>>, String> = py.detach(move || {
            let slices = slices;
            catch_unwind(AssertUnwindSafe(|| {
                let msgs: Vec<&[u8]> = slices
                    .0
                    .iter()
                    .map(|&(ptr, n)| if n == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(ptr, n) } })
                    .collect();
                let parse = |range: std::ops::Range<usize>| {
                    columns::parse_messages(tree, root, specs, keep, &hint, &msgs[range.clone()], range.start, start)
                };
                let threads = if nmsg >= PARALLEL_MIN { parse_threads() } else { 1 };
                if threads < 2 {
                    return parse(0..nmsg).map(|cols| vec![cols]);
                }
                // Two halves on two threads; the first half's error wins, as in a serial parse.
                let half = nmsg / 2;
                let (a, b) = std::thread::scope(|scope| {
                    let second = scope.spawn(|| parse(half..nmsg));
                    let first = parse(0..half);
                    (first, second.join())
                });
                let b = match b {
                    Ok(r) => r,
                    Err(p) => std::panic::resume_unwind(p),
                };
                Ok(vec![a?, b?])
            }))
            .unwrap_or_else(|_| Err("internal error while parsing columns".into()))
        });
        let parts = parsed.map_err(AvroDecodeError::new_err)?;
        // Column `i` of every part, in message order.
        let col_parts = |i: usize| -> Vec<&Col> { parts.iter().map(|p| &p[i]).collect() };
        if nmsg > 0 {
            let per = |n: usize| n.div_ceil(nmsg);
            if let Ok(mut g) = self.col_hint.lock() {
                if g.len() != ncols {
                    *g = vec![[0; 4]; ncols];
                }
                // Only the columns filled: a projection leaves the others' hints alone.
                for (i, h) in g.iter_mut().enumerate() {
                    if kept(i) {
                        let cs = col_parts(i);
                        let sum = |f: fn(&Col) -> usize| per(cs.iter().map(|c| f(c)).sum());
                        *h = [sum(|c| c.data.len()), sum(|c| c.valid.len()), sum(|c| c.offsets.len()), sum(|c| c.refs.len())];
                    }
                }
            }
        }

        let out = PyDict::new(py);
        let mut copies: Vec<BytesFill> = Vec::new();
        out.set_item("__len__", srcs.len())?;
        let none = py.None();
        for (i, spec) in plan.cols.iter().enumerate() {
            if !kept(i) {
                continue;
            }
            let cs = col_parts(i);
            let refs = || cs.iter().flat_map(|c| c.refs.iter());
            let valid: Py<PyAny> = if spec.mask {
                joined_bytes(py, cs.iter().map(|c| c.valid.as_slice()))?.unbind()
            } else {
                none.clone_ref(py)
            };
            let (data, offsets): (Py<PyAny>, Py<PyAny>) = match spec.store {
                Store::Fixed => (joined_bytes(py, cs.iter().map(|c| c.data.as_slice()))?.unbind(), none.clone_ref(py)),
                Store::Offsets => (none.clone_ref(py), offsets_bytes(py, &cs)?.unbind()),
                Store::ValidOnly | Store::Nothing => (none.clone_ref(py), none.clone_ref(py)),
                Store::Refs => {
                    let is_str = spec.kind == "string";
                    let list = PyList::empty(py);
                    for &(m, s, l) in refs() {
                        if m == NONE_REF {
                            list.append(py.None())?;
                            continue;
                        }
                        let b = unsafe { &srcs[m as usize].slice()[s as usize..(s + l) as usize] };
                        let o = unsafe {
                            if is_str {
                                // Already validated as UTF-8 while parsing.
                                ffi::PyUnicode_FromStringAndSize(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t)
                            } else {
                                // Created empty, filled by `fill_bytes` before the result is
                                // returned (possibly on two threads); nothing sees it before.
                                let o = ffi::PyBytes_FromStringAndSize(std::ptr::null(), b.len() as ffi::Py_ssize_t);
                                if !o.is_null() {
                                    copies.push(BytesFill { to: ffi::PyBytes_AsString(o) as usize, from: b.as_ptr() as usize, len: b.len() });
                                }
                                o
                            }
                        };
                        let o = unsafe { Bound::from_owned_ptr_or_err(py, o)? };
                        list.append(o)?;
                    }
                    (list.into_any().unbind(), none.clone_ref(py))
                }
                Store::Enum(node) => {
                    let schema::Node::Enum { py_symbols, .. } = &self.tree.nodes[node] else {
                        unreachable!("enum store on a non-enum node")
                    };
                    let list = PyList::empty(py);
                    let codes = cs.iter().flat_map(|c| c.data.chunks_exact(4));
                    let valid = cs.iter().flat_map(|c| c.valid.iter());
                    for (c, v) in codes.zip(valid.map(Some).chain(std::iter::repeat(None))) {
                        if spec.mask && v == Some(&0) {
                            list.append(py.None())?;
                        } else {
                            let code = i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
                            list.append(py_symbols[code].bind(py))?;
                        }
                    }
                    (list.into_any().unbind(), none.clone_ref(py))
                }
                Store::Object(node) => {
                    let list = PyList::empty(py);
                    for &(m, s, l) in refs() {
                        if m == NONE_REF {
                            list.append(py.None())?;
                            continue;
                        }
                        let buf = unsafe { srcs[m as usize].slice() };
                        let end = (s + l) as usize;
                        let mut dec = Decoder { t: &self.tree, cur: Cursor::new(&buf[..end], s as usize), py, cache };
                        match unsafe { dec.value(node, 0) } {
                            Ok(p) => list.append(unsafe { Bound::from_owned_ptr(py, p) })?,
                            Err(DErr::Avro(e)) => {
                                return Err(AvroDecodeError::new_err(format!("message {m}: {} at byte {}", e.msg, e.pos)))
                            }
                            Err(DErr::Py(e)) => return Err(e),
                        }
                    }
                    (list.into_any().unbind(), none.clone_ref(py))
                }
            };
            let tup = PyTuple::new(py, [spec.kind.into_pyobject(py)?.into_any().unbind(), data, valid, offsets])?;
            out.set_item(&spec.path, tup)?;
        }
        fill_bytes(py, &copies);
        Ok(out)
    }
}

/// The contents of one `bytes` value of a columnar decode: `len` bytes from a message (held
/// until the call returns) into a bytes object created empty. Addresses as integers: they are
/// handed to a GIL-free thread.
struct BytesFill {
    to: usize,
    from: usize,
    len: usize,
}

/// Below this many bytes of `bytes` values (cutouts) in a batch, they are copied on one thread.
const PARALLEL_COPY_MIN: usize = 1 << 20;

/// Fill the `bytes` values created empty, with the GIL released and on two threads when there
/// is much to copy. Why: the cutouts are ~80% of an alert's bytes, and copying them was the
/// largest part of a columnar decode left under the GIL after the parallel parse.
fn fill_bytes(py: Python<'_>, copies: &[BytesFill]) {
    let copy = |part: &[BytesFill]| {
        for c in part {
            // SAFETY: `to` is a fresh bytes object's buffer of `len` bytes that only this call
            // writes; `from` points into a message that the caller keeps alive and unchanged.
            unsafe { std::ptr::copy_nonoverlapping(c.from as *const u8, c.to as *mut u8, c.len) }
        }
    };
    let total: usize = copies.iter().map(|c| c.len).sum();
    if total < PARALLEL_COPY_MIN || parse_threads() < 2 {
        copy(copies);
        return;
    }
    let mut seen = 0;
    let half = copies.iter().position(|c| {
        seen += c.len;
        seen >= total / 2
    });
    let (a, b) = copies.split_at(half.map_or(copies.len(), |i| i + 1));
    py.detach(|| {
        std::thread::scope(|scope| {
            scope.spawn(|| copy(b));
            copy(a);
        })
    });
}

/// One `bytes` of `pieces` end to end, written in place (no joined copy built first).
fn joined_bytes<'py, 'a>(py: Python<'py>, pieces: impl Iterator<Item = &'a [u8]> + Clone) -> PyResult<Bound<'py, PyAny>> {
    let total: usize = pieces.clone().map(<[u8]>::len).sum();
    // SAFETY: a fresh, uninitialised bytes object of `total` bytes that nothing else has seen;
    // every byte is written below before it is returned.
    unsafe {
        let obj = Bound::from_owned_ptr_or_err(py, ffi::PyBytes_FromStringAndSize(std::ptr::null(), total as ffi::Py_ssize_t))?;
        let mut at = ffi::PyBytes_AsString(obj.as_ptr()) as *mut u8;
        for p in pieces {
            std::ptr::copy_nonoverlapping(p.as_ptr(), at, p.len());
            at = at.add(p.len());
        }
        Ok(obj)
    }
}

/// The int64 offsets of an array/map column as one little-endian `bytes`: each part after the
/// first starts where the previous one ended, so its offsets are shifted by that and its
/// leading 0 is dropped.
fn offsets_bytes<'py>(py: Python<'py>, cs: &[&Col]) -> PyResult<Bound<'py, PyAny>> {
    let n: usize = cs.iter().map(|c| c.offsets.len()).sum::<usize>() + 1 - cs.len().max(1);
    // SAFETY: as in `joined_bytes`; exactly `n` int64 values are written.
    unsafe {
        let obj = Bound::from_owned_ptr_or_err(py, ffi::PyBytes_FromStringAndSize(std::ptr::null(), (n * 8) as ffi::Py_ssize_t))?;
        let out = std::slice::from_raw_parts_mut(ffi::PyBytes_AsString(obj.as_ptr()) as *mut u8, n * 8);
        let mut k = 0;
        let mut base = 0i64;
        for (j, c) in cs.iter().enumerate() {
            let skip = usize::from(j > 0);
            for o in c.offsets.iter().skip(skip) {
                out[k * 8..k * 8 + 8].copy_from_slice(&(o + base).to_le_bytes());
                k += 1;
            }
            base += c.offsets.last().copied().unwrap_or(0);
        }
        debug_assert_eq!(k, n);
        Ok(obj)
    }
}

/// Batches of at least this many messages are parsed on two threads (when two CPUs are there).
const PARALLEL_MIN: usize = 64;

/// Threads for one `decode_columns` parse: 2 if the machine has two CPUs, else 1.
/// `ALERTBENCH_NATIVE_THREADS=1` keeps it on one (read once).
fn parse_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let asked = std::env::var("ALERTBENCH_NATIVE_THREADS").ok().and_then(|v| v.parse().ok());
        asked.unwrap_or(2).clamp(1, 2).min(cpus)
    })
}

/// Bytes of freed heap that glibc may keep instead of handing back to the kernel, and the
/// size from which an allocation gets its own mapping.
const KEEP_FREED: i32 = 64 << 20;
const OWN_MAPPING_FROM: i32 = 4 << 20;

/// Make glibc keep freed memory for reuse instead of returning it to the kernel after every
/// batch; returns whether it did.
///
/// Why: measured on the 100-alert pool, most of the time of the encoder, of the dict decoder
/// and of a columnar decode that returns cutouts was page faults, not codec work: glibc's
/// defaults give the heap top back (trim threshold ~128 KiB) and map every allocation over
/// 128 KiB (a 134 KB alert, the encoder's buffer) afresh, so each pass faults its ~10 MB back
/// in (2,800 faults per batch, ~2 µs each in a VM). Keeping up to 64 MiB of freed heap and
/// mapping only allocations of 4 MiB or more removes those faults (columns 103 -> 48 µs/alert on
/// one thread, encode 185 -> 128 µs/alert) at the price of a process that holds on to up to
/// 64 MiB it freed. The policy is process-wide (it helps every codec in the process alike, so
/// comparisons between engines stay fair); an explicit choice wins: nothing is changed when
/// `ALERTBENCH_NATIVE_MALLOC=default` or the glibc malloc tunables are set in the environment.
fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        let chosen = std::env::var_os("ALERTBENCH_NATIVE_MALLOC").is_some_and(|v| v == "default")
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|v| v.contains("glibc.malloc."))
            || std::env::vars_os().any(|(k, _)| k.to_str().is_some_and(|k| k.starts_with("MALLOC_") && k.ends_with('_')));
        if chosen {
            return false;
        }
        // SAFETY: mallopt only changes glibc's allocation policy; it is safe to call at any time.
        unsafe { mallopt(M_MMAP_THRESHOLD, OWN_MAPPING_FROM) == 1 && mallopt(M_TRIM_THRESHOLD, KEEP_FREED) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The native Avro codec. Why native: see the crate documentation (README.md).
/// The first `n` bytes that every message of `messages` starts with, or None when one is
/// shorter or starts otherwise. Why: a visit's messages share one Confluent header, and
/// checking that in Python costs ~1 µs a message, a tenth of a projected columnar decode.
#[pyfunction]
fn common_prefix<'py>(py: Python<'py>, messages: &Bound<'py, PyAny>, n: usize) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let mut first: Option<Vec<u8>> = None;
    for message in messages.try_iter()? {
        let message = message?;
        let src = Src::get(&message)?;
        let (ptr, len) = src.ptr_len();
        if len < n {
            return Ok(None);
        }
        // SAFETY: `src` holds the object (and its buffer export) while the slice is read.
        let head = if n == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(ptr, n) } };
        match &first {
            None => first = Some(head.to_vec()),
            Some(f) if f.as_slice() == head => {}
            Some(_) => return Ok(None),
        }
    }
    Ok(first.map(|f| PyBytes::new(py, &f)))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MALLOC_KEEPS_FREED", keep_freed_memory())?;
    m.add_function(wrap_pyfunction!(common_prefix, m)?)?;
    m.add_class::<Schema>()?;
    m.add("AvroDecodeError", m.py().get_type::<AvroDecodeError>())?;
    m.add("AvroEncodeError", m.py().get_type::<AvroEncodeError>())?;
    Ok(())
}
