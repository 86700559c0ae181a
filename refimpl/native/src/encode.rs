//! Python objects → Avro binary, byte-identical to `fastavro.schemaless_writer`.
//!
//! What fastavro does, and so what this does:
//! * a record writes its fields in schema order from `datum.get(name, default)`; a missing
//!   field without default is written as null when its type mentions "null", else an error;
//! * a union picks its branch by validating the value against each branch in order (first
//!   match wins, except that a `float` match keeps looking for a later `double`, and records
//!   pick the branch sharing the most field names); tuples `(name, value)` name the branch;
//! * arrays and maps are written as one block holding every item, then a 0 count;
//! * floats are rounded to f32 (C `(float)` conversion, round-to-nearest-even).
//!
//! Why the union fast path: almost every field of a Rubin alert is `["null", T]`; for those
//! the value's exact Python type decides the branch without the general validation walk.
//!
//! Where this is stricter than fastavro (it raises AvroEncodeError instead of coercing):
//! strings for float fields (fastavro calls `float()` on them), floats for int fields,
//! out-of-range ints for `int`, arbitrary objects for boolean/null fields.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::decode::Owned;
use crate::pycache::PyCache;
use crate::reader::MAX_DEPTH;
use crate::schema::{Field, Node, NodeId, TimeUnit, Tree};

pub enum Seg<'s> {
    Field(&'s str),
    Index(usize),
    Key(String),
}

pub struct EncErr<'s> {
    pub msg: String,
    pub path: Vec<Seg<'s>>,
}

impl EncErr<'_> {
    /// "diaSource.ra: expected double, got str", "prvDiaSources[3].ra: ..."
    pub fn render(&self) -> String {
        let mut p = String::new();
        for s in self.path.iter().rev() {
            match s {
                Seg::Field(f) => {
                    if !p.is_empty() {
                        p.push('.');
                    }
                    p.push_str(f);
                }
                Seg::Index(i) => p.push_str(&format!("[{i}]")),
                Seg::Key(k) => p.push_str(&format!("[{k:?}]")),
            }
        }
        if p.is_empty() {
            self.msg.clone()
        } else {
            format!("{p}: {}", self.msg)
        }
    }
}

type ER<'s> = Result<(), Box<EncErr<'s>>>;

#[cold]
#[inline(never)]
fn fail<'s, T>(msg: String) -> Result<T, Box<EncErr<'s>>> {
    Err(Box::new(EncErr { msg, path: Vec::new() }))
}

#[inline(always)]
pub fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    out.reserve(10);
    // SAFETY: 10 bytes reserved, a zig-zag varint of 64 bits takes at most 10.
    unsafe {
        let len = out.len();
        let p = out.as_mut_ptr().add(len);
        let mut i = 0;
        while n >= 0x80 {
            *p.add(i) = (n as u8) | 0x80;
            n >>= 7;
            i += 1;
        }
        *p.add(i) = n as u8;
        out.set_len(len + i + 1);
    }
}

#[inline(always)]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Python type name of `v`, for messages.
unsafe fn tname(py: Python<'_>, v: *mut ffi::PyObject) -> String {
    let b = Bound::from_borrowed_ptr(py, v);
    b.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// Fetch (and clear) the pending Python exception as text.
unsafe fn take_err(py: Python<'_>) -> String {
    match PyErr::take(py) {
        Some(e) => e.to_string(),
        None => "unknown error".into(),
    }
}

/// A strong reference held while Python code may run (a `__float__`, a Mapping's
/// `__getitem__`), so that the value cannot be freed under us by a mutation of its container.
struct Hold(*mut ffi::PyObject);
impl Hold {
    #[inline(always)]
    unsafe fn new(p: *mut ffi::PyObject) -> Self {
        ffi::Py_INCREF(p);
        Hold(p)
    }
}
impl Drop for Hold {
    #[inline(always)]
    fn drop(&mut self) {
        unsafe { ffi::Py_DECREF(self.0) }
    }
}

/// `bytes` values at least this long are not copied into the scratch buffer but spliced into
/// the final `bytes` object: the three ~35 KB cutouts of an alert are then copied once, not twice.
const SPLICE_MIN: usize = 2048;

pub struct Encoder<'s, 'py> {
    pub t: &'s Tree,
    pub out: Vec<u8>,
    pub py: Python<'py>,
    pub cache: &'s PyCache,
    /// (position in `out`, strong reference to an immutable `bytes`) to splice in at the end.
    splices: Vec<(usize, *mut ffi::PyObject)>,
    spliced_len: usize,
}

impl Drop for Encoder<'_, '_> {
    fn drop(&mut self) {
        for &(_, o) in &self.splices {
            // The encoder only lives inside a call holding the GIL.
            unsafe { ffi::Py_DECREF(o) }
        }
    }
}

impl<'s, 'py> Encoder<'s, 'py> {
    pub fn new(t: &'s Tree, py: Python<'py>, cache: &'s PyCache, capacity: usize) -> Self {
        Encoder { t, out: Vec::with_capacity(capacity), py, cache, splices: Vec::new(), spliced_len: 0 }
    }

    /// Total encoded size.
    pub fn len(&self) -> usize {
        self.out.len() + self.spliced_len
    }

    /// Copy the encoding into a new `bytes` object (the only copy of spliced values).
    pub fn finish(&self) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let py = self.py;
        let total = self.len();
        unsafe {
            let o = ffi::PyBytes_FromStringAndSize(std::ptr::null(), total as ffi::Py_ssize_t);
            let o = Bound::from_owned_ptr_or_err(py, o)?;
            let dst = ffi::PyBytes_AsString(o.as_ptr()).cast::<u8>();
            let mut d = 0usize;
            let mut s = 0usize;
            for &(at, b) in &self.splices {
                let n = at - s;
                std::ptr::copy_nonoverlapping(self.out.as_ptr().add(s), dst.add(d), n);
                d += n;
                s = at;
                let bl = ffi::PyBytes_Size(b) as usize;
                std::ptr::copy_nonoverlapping(ffi::PyBytes_AsString(b).cast::<u8>(), dst.add(d), bl);
                d += bl;
            }
            let n = self.out.len() - s;
            std::ptr::copy_nonoverlapping(self.out.as_ptr().add(s), dst.add(d), n);
            debug_assert_eq!(d + n, total);
            Ok(o.cast_into_unchecked())
        }
    }
    unsafe fn isinstance(&self, v: *mut ffi::PyObject, cls: &Py<PyAny>) -> Result<bool, Box<EncErr<'s>>> {
        match ffi::PyObject_IsInstance(v, cls.as_ptr()) {
            1 => Ok(true),
            0 => Ok(false),
            _ => fail(take_err(self.py)),
        }
    }

    unsafe fn is_mapping(&self, v: *mut ffi::PyObject) -> Result<bool, Box<EncErr<'s>>> {
        if ffi::PyDict_Check(v) != 0 {
            return Ok(true);
        }
        self.isinstance(v, &self.cache.mapping)
    }

    unsafe fn is_sequence(&self, v: *mut ffi::PyObject) -> Result<bool, Box<EncErr<'s>>> {
        if ffi::PyList_Check(v) != 0 || ffi::PyTuple_Check(v) != 0 {
            return Ok(true);
        }
        if ffi::PyUnicode_Check(v) != 0 {
            return Ok(false);
        }
        Ok(self.isinstance(v, &self.cache.sequence)? || self.isinstance(v, &self.cache.array_type)?)
    }

    /// An integer value (int, or numbers.Integral such as numpy ints), not bool; None when
    /// `v` is not one or does not fit in 64 bits (fastavro's validate_int/validate_long).
    unsafe fn integral(&self, v: *mut ffi::PyObject) -> Result<Option<i64>, Box<EncErr<'s>>> {
        if ffi::PyBool_Check(v) != 0 {
            return Ok(None);
        }
        if ffi::PyLong_Check(v) != 0 {
            let x = ffi::PyLong_AsLongLong(v);
            if x == -1 && !ffi::PyErr_Occurred().is_null() {
                ffi::PyErr_Clear();
                return Ok(None);
            }
            return Ok(Some(x));
        }
        if !self.isinstance(v, &self.cache.integral)? {
            return Ok(None);
        }
        let _h = Hold::new(v);
        let i = ffi::PyNumber_Index(v);
        if i.is_null() {
            ffi::PyErr_Clear();
            return Ok(None);
        }
        let x = ffi::PyLong_AsLongLong(i);
        ffi::Py_DECREF(i);
        if x == -1 && !ffi::PyErr_Occurred().is_null() {
            ffi::PyErr_Clear();
            return Ok(None);
        }
        Ok(Some(x))
    }

    /// Value for an int/long field outside a union (bool accepted as 0/1, like fastavro).
    unsafe fn get_i64(&self, v: *mut ffi::PyObject, what: &str) -> Result<i64, Box<EncErr<'s>>> {
        if ffi::PyLong_Check(v) != 0 {
            let x = ffi::PyLong_AsLongLong(v);
            if x == -1 && !ffi::PyErr_Occurred().is_null() {
                ffi::PyErr_Clear();
                return fail(format!("{what} value out of 64-bit range"));
            }
            return Ok(x);
        }
        if ffi::PyFloat_Check(v) == 0 && ffi::PyUnicode_Check(v) == 0 && ffi::PyIndex_Check(v) != 0 {
            let _h = Hold::new(v);
            let i = ffi::PyNumber_Index(v);
            if !i.is_null() {
                let x = ffi::PyLong_AsLongLong(i);
                ffi::Py_DECREF(i);
                if x == -1 && !ffi::PyErr_Occurred().is_null() {
                    ffi::PyErr_Clear();
                    return fail(format!("{what} value out of 64-bit range"));
                }
                return Ok(x);
            }
            ffi::PyErr_Clear();
        }
        fail(format!("expected {what}, got {}", tname(self.py, v)))
    }

    /// Value for a float/double field outside a union: what fastavro's `float(datum)` accepts,
    /// except strings.
    #[inline(always)]
    unsafe fn get_f64(&self, v: *mut ffi::PyObject, what: &str) -> Result<f64, Box<EncErr<'s>>> {
        if ffi::PyFloat_CheckExact(v) != 0 {
            return Ok(ffi::PyFloat_AsDouble(v));
        }
        self.get_f64_slow(v, what)
    }

    #[inline(never)]
    unsafe fn get_f64_slow(&self, v: *mut ffi::PyObject, what: &str) -> Result<f64, Box<EncErr<'s>>> {
        if ffi::PyUnicode_Check(v) != 0
            || ffi::PyBytes_Check(v) != 0
            || ffi::PyByteArray_Check(v) != 0
            || v == ffi::Py_None()
        {
            return fail(format!("expected {what}, got {}", tname(self.py, v)));
        }
        let _h = Hold::new(v);
        let x = ffi::PyFloat_AsDouble(v);
        if x == -1.0 && !ffi::PyErr_Occurred().is_null() {
            let e = take_err(self.py);
            return fail(format!("expected {what}, got {} ({e})", tname(self.py, v)));
        }
        Ok(x)
    }

    /// fastavro's `_validate` for union branch selection; `deep` also validates the contents
    /// of containers (used when several branches could take the same Python type).
    unsafe fn validate(&self, node: NodeId, v: *mut ffi::PyObject, deep: bool, depth: u32) -> Result<bool, Box<EncErr<'s>>> {
        if depth >= MAX_DEPTH {
            return fail("nesting deeper than the limit (cyclic data?)".into());
        }
        let t = self.t;
        Ok(match &t.nodes[node] {
            Node::Null => v == ffi::Py_None(),
            Node::Boolean => ffi::PyBool_Check(v) != 0,
            Node::String => ffi::PyUnicode_Check(v) != 0,
            Node::Bytes => ffi::PyBytes_Check(v) != 0 || ffi::PyByteArray_Check(v) != 0,
            Node::Int => matches!(self.integral(v)?, Some(x) if x >= i32::MIN as i64 && x <= i32::MAX as i64),
            Node::Long => self.integral(v)?.is_some(),
            Node::Timestamp { unit, local } => {
                if ffi::PyLong_Check(v) == 0 && self.isinstance(v, &self.cache.datetime)? {
                    self.datetime_to_int(v, *unit, *local).is_ok()
                } else {
                    self.integral(v)?.is_some()
                }
            }
            Node::Float | Node::Double => {
                ffi::PyBool_Check(v) == 0
                    && (ffi::PyFloat_Check(v) != 0 || ffi::PyLong_Check(v) != 0 || self.isinstance(v, &self.cache.real)?)
            }
            Node::Fixed { size, .. } => {
                if ffi::PyBytes_Check(v) != 0 {
                    ffi::PyBytes_Size(v) as usize == *size
                } else if ffi::PyByteArray_Check(v) != 0 {
                    ffi::PyByteArray_Size(v) as usize == *size
                } else {
                    false
                }
            }
            Node::Enum { symbols, .. } => {
                ffi::PyUnicode_Check(v) != 0 && {
                    let s = utf8(v);
                    s.is_some_and(|s| symbols.iter().any(|x| x.as_bytes() == s))
                }
            }
            Node::Array { items } => {
                if !self.is_sequence(v)? {
                    return Ok(false);
                }
                if deep {
                    let _h = Hold::new(v);
                    let list = Owned(ffi::PySequence_List(v));
                    if list.0.is_null() {
                        ffi::PyErr_Clear();
                        return Ok(false);
                    }
                    let n = ffi::PyList_Size(list.0);
                    for i in 0..n {
                        if !self.validate(*items, ffi::PyList_GetItem(list.0, i), true, depth + 1)? {
                            return Ok(false);
                        }
                    }
                }
                true
            }
            Node::Map { values } => {
                if !self.is_mapping(v)? {
                    return Ok(false);
                }
                if deep {
                    let _h = Hold::new(v);
                    let items = Owned(ffi::PyMapping_Items(v));
                    if items.0.is_null() {
                        ffi::PyErr_Clear();
                        return Ok(false);
                    }
                    let n = ffi::PyList_Size(items.0);
                    for i in 0..n {
                        let kv = ffi::PyList_GetItem(items.0, i);
                        if ffi::PyTuple_Size(kv) != 2 || ffi::PyUnicode_Check(ffi::PyTuple_GetItem(kv, 0)) == 0 {
                            return Ok(false);
                        }
                        if !self.validate(*values, ffi::PyTuple_GetItem(kv, 1), true, depth + 1)? {
                            return Ok(false);
                        }
                    }
                }
                true
            }
            Node::Record { name, fields, .. } => {
                if !self.is_mapping(v)? {
                    return Ok(false);
                }
                let _h = Hold::new(v);
                if let Some(ty) = self.lookup(v, self.cache.dash_type.as_ptr())? {
                    let ty = Owned(ty);
                    if ffi::PyUnicode_Check(ty.0) == 0 || utf8(ty.0) != Some(name.as_bytes()) {
                        return Ok(false);
                    }
                }
                if deep {
                    for f in fields {
                        let x = match self.lookup(v, f.key.as_ptr())? {
                            Some(x) => Owned(x),
                            None => match &f.default {
                                Some(d) => Owned(new_ref(d.as_ptr())),
                                None => Owned(new_ref(ffi::Py_None())),
                            },
                        };
                        if !self.validate(f.node, x.0, true, depth + 1)? {
                            return Ok(false);
                        }
                    }
                }
                true
            }
            Node::Union { branches, names, .. } => {
                if ffi::PyTuple_Check(v) != 0 {
                    if let Some((i, x)) = self.tuple_notation(names, v)? {
                        return self.validate(branches[i], x.0, deep, depth + 1);
                    }
                    return Ok(false);
                }
                for &b in branches {
                    if self.validate(b, v, deep, depth + 1)? {
                        return Ok(true);
                    }
                }
                false
            }
        })
    }

    /// `datum[key]` if present (new reference), for dicts and other Mappings.
    unsafe fn lookup(&self, v: *mut ffi::PyObject, key: *mut ffi::PyObject) -> Result<Option<*mut ffi::PyObject>, Box<EncErr<'s>>> {
        if ffi::PyDict_Check(v) != 0 {
            let x = ffi::PyDict_GetItemWithError(v, key);
            if x.is_null() {
                if !ffi::PyErr_Occurred().is_null() {
                    return fail(take_err(self.py));
                }
                return Ok(None);
            }
            return Ok(Some(new_ref(x)));
        }
        match ffi::PySequence_Contains(v, key) {
            1 => {}
            0 => return Ok(None),
            _ => return fail(take_err(self.py)),
        }
        let x = ffi::PyObject_GetItem(v, key);
        if x.is_null() {
            return fail(take_err(self.py));
        }
        Ok(Some(x))
    }

    /// fastavro's tuple notation: `(branch name, value)`.
    unsafe fn tuple_notation(&self, names: &[String], v: *mut ffi::PyObject) -> Result<Option<(usize, Owned)>, Box<EncErr<'s>>> {
        if ffi::PyTuple_Size(v) != 2 {
            return fail(format!("a tuple given for a union must be (branch name, value), got {} items", ffi::PyTuple_Size(v)));
        }
        let name = ffi::PyTuple_GetItem(v, 0);
        let x = ffi::PyTuple_GetItem(v, 1);
        if ffi::PyUnicode_Check(name) == 0 {
            return Ok(None);
        }
        let n = utf8(name);
        Ok(names.iter().position(|s| Some(s.as_bytes()) == n).map(|i| (i, Owned(new_ref(x)))))
    }

    #[inline(always)]
    unsafe fn nested(&mut self, node: NodeId, v: *mut ffi::PyObject, depth: u32) -> ER<'s> {
        if depth >= MAX_DEPTH {
            return fail("nesting deeper than the limit (cyclic data?)".into());
        }
        self.write(node, v, depth + 1)
    }

    /// Write one value of `node`.
    ///
    /// # Safety
    /// The GIL must be held and `v` must be a valid (borrowed) object.
    pub unsafe fn write(&mut self, node: NodeId, v: *mut ffi::PyObject, depth: u32) -> ER<'s> {
        let t = self.t;
        match &t.nodes[node] {
            Node::Double => {
                let x = self.get_f64(v, "double")?;
                self.out.extend_from_slice(&x.to_le_bytes());
                Ok(())
            }
            Node::Float => {
                let x = self.get_f64(v, "float")?;
                self.out.extend_from_slice(&(x as f32).to_le_bytes());
                Ok(())
            }
            Node::Union { branches, simple, names } => {
                if let Some((ni, oi)) = *simple {
                    if v == ffi::Py_None() {
                        self.out.push(ni << 1);
                        return Ok(());
                    }
                    let other = branches[oi as usize];
                    let idx = oi << 1;
                    match &t.nodes[other] {
                        Node::Float if ffi::PyFloat_CheckExact(v) != 0 => {
                            self.out.push(idx);
                            let x = ffi::PyFloat_AsDouble(v) as f32;
                            self.out.extend_from_slice(&x.to_le_bytes());
                            return Ok(());
                        }
                        Node::Double if ffi::PyFloat_CheckExact(v) != 0 => {
                            self.out.push(idx);
                            self.out.extend_from_slice(&ffi::PyFloat_AsDouble(v).to_le_bytes());
                            return Ok(());
                        }
                        Node::Boolean if v == ffi::Py_True() || v == ffi::Py_False() => {
                            self.out.push(idx);
                            self.out.push((v == ffi::Py_True()) as u8);
                            return Ok(());
                        }
                        Node::Long if ffi::PyLong_CheckExact(v) != 0 => {
                            let x = ffi::PyLong_AsLongLong(v);
                            if x != -1 || ffi::PyErr_Occurred().is_null() {
                                self.out.push(idx);
                                put_long(&mut self.out, x);
                                return Ok(());
                            }
                            ffi::PyErr_Clear();
                        }
                        Node::Int if ffi::PyLong_CheckExact(v) != 0 => {
                            let x = ffi::PyLong_AsLongLong(v);
                            if (x != -1 || ffi::PyErr_Occurred().is_null()) && x >= i32::MIN as i64 && x <= i32::MAX as i64 {
                                self.out.push(idx);
                                put_long(&mut self.out, x);
                                return Ok(());
                            }
                            ffi::PyErr_Clear();
                        }
                        Node::String if ffi::PyUnicode_CheckExact(v) != 0 => {
                            self.out.push(idx);
                            return self.write(other, v, depth);
                        }
                        Node::Bytes if ffi::PyBytes_CheckExact(v) != 0 => {
                            self.out.push(idx);
                            return self.write(other, v, depth);
                        }
                        Node::Array { .. } if ffi::PyList_CheckExact(v) != 0 => {
                            self.out.push(idx);
                            return self.write(other, v, depth);
                        }
                        Node::Record { .. } if ffi::PyDict_CheckExact(v) != 0 => {
                            let ty = ffi::PyDict_GetItemWithError(v, self.cache.dash_type.as_ptr());
                            if ty.is_null() && ffi::PyErr_Occurred().is_null() {
                                self.out.push(idx);
                                return self.write(other, v, depth);
                            }
                            ffi::PyErr_Clear(); // "-type" present: checked by the general path
                        }
                        _ => {}
                    }
                    return self.write_union_general(branches, names, v, depth, false);
                }
                self.write_union_general(branches, names, v, depth, true)
            }
            Node::Long => {
                let x = self.get_i64(v, "long")?;
                put_long(&mut self.out, x);
                Ok(())
            }
            Node::Int => {
                let x = self.get_i64(v, "int")?;
                if x < i32::MIN as i64 || x > i32::MAX as i64 {
                    return fail(format!("int value {x} out of 32-bit range"));
                }
                put_long(&mut self.out, x);
                Ok(())
            }
            Node::Boolean => {
                let b = if v == ffi::Py_True() {
                    true
                } else if v == ffi::Py_False() {
                    false
                } else if ffi::PyLong_Check(v) != 0 || is_numpy_bool(self.py, v) {
                    let _h = Hold::new(v);
                    match ffi::PyObject_IsTrue(v) {
                        1 => true,
                        0 => false,
                        _ => return fail(take_err(self.py)),
                    }
                } else {
                    return fail(format!("expected boolean, got {}", tname(self.py, v)));
                };
                self.out.push(b as u8);
                Ok(())
            }
            Node::Null => {
                if v != ffi::Py_None() {
                    return fail(format!("expected null, got {}", tname(self.py, v)));
                }
                Ok(())
            }
            Node::String => {
                if ffi::PyUnicode_Check(v) == 0 {
                    return fail(format!("expected string, got {}", tname(self.py, v)));
                }
                let mut n: ffi::Py_ssize_t = 0;
                let p = ffi::PyUnicode_AsUTF8AndSize(v, &mut n);
                if p.is_null() {
                    return fail(format!("string cannot be encoded as UTF-8: {}", take_err(self.py)));
                }
                put_bytes(&mut self.out, std::slice::from_raw_parts(p.cast::<u8>(), n as usize));
                Ok(())
            }
            Node::Bytes => {
                if ffi::PyBytes_Check(v) != 0 {
                    let p = ffi::PyBytes_AsString(v);
                    let n = ffi::PyBytes_Size(v) as usize;
                    if n >= SPLICE_MIN {
                        // bytes are immutable and we keep a reference: safe to copy later.
                        put_long(&mut self.out, n as i64);
                        ffi::Py_INCREF(v);
                        self.splices.push((self.out.len(), v));
                        self.spliced_len += n;
                    } else {
                        put_bytes(&mut self.out, std::slice::from_raw_parts(p.cast::<u8>(), n));
                    }
                    return Ok(());
                }
                self.with_buffer(v, "bytes", put_bytes)
            }
            Node::Fixed { size, name } => {
                let size = *size;
                let mut bad = None;
                self.with_buffer(v, name, |out, b| {
                    if b.len() == size {
                        out.extend_from_slice(b)
                    } else {
                        bad = Some(b.len())
                    }
                })?;
                if let Some(n) = bad {
                    return fail(format!("fixed {name} needs {size} bytes, got {n}"));
                }
                Ok(())
            }
            Node::Enum { symbols, name, .. } => {
                if ffi::PyUnicode_Check(v) != 0 {
                    if let Some(s) = utf8(v) {
                        if let Some(i) = symbols.iter().position(|x| x.as_bytes() == s) {
                            put_long(&mut self.out, i as i64);
                            return Ok(());
                        }
                    }
                    let r = Bound::from_borrowed_ptr(self.py, v).repr().map(|r| r.to_string()).unwrap_or_default();
                    return fail(format!("{r} is not a symbol of enum {name}"));
                }
                fail(format!("expected a symbol of enum {name} (str), got {}", tname(self.py, v)))
            }
            Node::Timestamp { unit, local } => {
                let x = if ffi::PyLong_Check(v) == 0 && self.isinstance(v, &self.cache.datetime)? {
                    self.datetime_to_int(v, *unit, *local)?
                } else {
                    self.get_i64(v, "long (or datetime)")?
                };
                put_long(&mut self.out, x);
                Ok(())
            }
            Node::Record { name, fields, .. } => self.write_record(name, fields, v, depth),
            Node::Array { items } => {
                let items = *items;
                if ffi::PyList_Check(v) != 0 {
                    let _h = Hold::new(v);
                    let n = ffi::PyList_Size(v);
                    if n > 0 {
                        put_long(&mut self.out, n as i64);
                        for i in 0..n {
                            let x = ffi::PyList_GetItem(v, i);
                            if x.is_null() {
                                ffi::PyErr_Clear();
                                return fail("list changed size while being encoded".into());
                            }
                            self.nested(items, x, depth).map_err(|mut e| {
                                e.path.push(Seg::Index(i as usize));
                                e
                            })?;
                        }
                    }
                    self.out.push(0);
                    return Ok(());
                }
                if ffi::PyTuple_Check(v) != 0 {
                    let n = ffi::PyTuple_Size(v);
                    if n > 0 {
                        put_long(&mut self.out, n as i64);
                        for i in 0..n {
                            let x = ffi::PyTuple_GetItem(v, i);
                            self.nested(items, x, depth).map_err(|mut e| {
                                e.path.push(Seg::Index(i as usize));
                                e
                            })?;
                        }
                    }
                    self.out.push(0);
                    return Ok(());
                }
                if ffi::PyUnicode_Check(v) != 0
                    || ffi::PyBytes_Check(v) != 0
                    || ffi::PyByteArray_Check(v) != 0
                    || ffi::PyDict_Check(v) != 0
                    || v == ffi::Py_None()
                {
                    return fail(format!("expected array (list), got {}", tname(self.py, v)));
                }
                // fastavro: `list(datum)` for any other iterable (numpy arrays, generators...)
                let l = ffi::PySequence_List(v);
                if l.is_null() {
                    let e = take_err(self.py);
                    return fail(format!("expected array (list), got {} ({e})", tname(self.py, v)));
                }
                let l = Owned(l);
                self.write(node, l.0, depth)
            }
            Node::Map { values } => {
                let values = *values;
                if !self.is_mapping(v)? {
                    return fail(format!("expected map (dict), got {}", tname(self.py, v)));
                }
                let _h = Hold::new(v);
                let items = ffi::PyMapping_Items(v);
                if items.is_null() {
                    return fail(take_err(self.py));
                }
                let items = Owned(items);
                let n = ffi::PyList_Size(items.0);
                if n > 0 {
                    put_long(&mut self.out, n as i64);
                    for i in 0..n {
                        let kv = ffi::PyList_GetItem(items.0, i);
                        let k = ffi::PyTuple_GetItem(kv, 0);
                        let x = ffi::PyTuple_GetItem(kv, 1);
                        if k.is_null() || x.is_null() {
                            ffi::PyErr_Clear();
                            return fail("map items() did not give (key, value) pairs".into());
                        }
                        if ffi::PyUnicode_Check(k) == 0 {
                            return fail(format!("map keys must be str, got {}", tname(self.py, k)));
                        }
                        let mut kn: ffi::Py_ssize_t = 0;
                        let kp = ffi::PyUnicode_AsUTF8AndSize(k, &mut kn);
                        if kp.is_null() {
                            return fail(format!("map key cannot be encoded as UTF-8: {}", take_err(self.py)));
                        }
                        let kb = std::slice::from_raw_parts(kp.cast::<u8>(), kn as usize);
                        put_bytes(&mut self.out, kb);
                        self.nested(values, x, depth).map_err(|mut e| {
                            e.path.push(Seg::Key(String::from_utf8_lossy(kb).into_owned()));
                            e
                        })?;
                    }
                }
                self.out.push(0);
                Ok(())
            }
        }
    }

    #[inline(never)]
    unsafe fn write_union_general(&mut self, branches: &'s [NodeId], names: &'s [String], v: *mut ffi::PyObject, depth: u32, deep: bool) -> ER<'s> {
        let t = self.t;
        if ffi::PyTuple_Check(v) != 0 {
            let Some((i, x)) = self.tuple_notation(names, v)? else {
                return fail(format!("tuple names none of the union branches [{}]", names.join(", ")));
            };
            put_long(&mut self.out, i as i64);
            return self.write(branches[i], x.0, depth);
        }
        let mut best: Option<usize> = None;
        let mut most_fields: i64 = -1;
        let mut could_be_float = false;
        for (i, &b) in branches.iter().enumerate() {
            if could_be_float {
                if matches!(t.nodes[b], Node::Double) {
                    best = Some(i);
                    break;
                }
                continue;
            }
            if self.validate(b, v, deep, depth)? {
                match &t.nodes[b] {
                    Node::Record { fields, .. } => {
                        let mut n = 0i64;
                        for f in fields {
                            if let Some(x) = self.lookup(v, f.key.as_ptr())? {
                                drop(Owned(x));
                                n += 1;
                            }
                        }
                        if n > most_fields {
                            best = Some(i);
                            most_fields = n;
                        }
                    }
                    Node::Float => {
                        best = Some(i);
                        could_be_float = true;
                    }
                    _ => {
                        best = Some(i);
                        break;
                    }
                }
            }
        }
        match best {
            Some(i) => {
                put_long(&mut self.out, i as i64);
                self.write(branches[i], v, depth)
            }
            None => {
                let want = if names.len() == 2 && names.iter().any(|n| n == "null") {
                    format!("{} or null", names.iter().find(|n| *n != "null").map(String::as_str).unwrap_or("?"))
                } else {
                    format!("one of [{}]", names.join(", "))
                };
                fail(format!("expected {want}, got {}", tname(self.py, v)))
            }
        }
    }

    unsafe fn write_record(&mut self, name: &'s str, fields: &'s [Field], v: *mut ffi::PyObject, depth: u32) -> ER<'s> {
        if ffi::PyDict_CheckExact(v) != 0 {
            let _h = Hold::new(v);
            // Records are nearly always built in schema order (fastavro's reader, our decoder,
            // literal dicts): walk the dict's entries alongside the fields and fall back to
            // hash look-ups from the first key that is out of place.
            let mut pos: ffi::Py_ssize_t = 0;
            let mut ordered = true;
            for f in fields {
                let mut x: *mut ffi::PyObject = std::ptr::null_mut();
                if ordered {
                    let mut k: *mut ffi::PyObject = std::ptr::null_mut();
                    let mut val: *mut ffi::PyObject = std::ptr::null_mut();
                    if ffi::PyDict_Next(v, &mut pos, &mut k, &mut val) != 0 && f.matches_key(k) {
                        x = val;
                    } else {
                        ordered = false;
                    }
                }
                if x.is_null() {
                    x = ffi::PyDict_GetItemWithError(v, f.key.as_ptr());
                }
                if x.is_null() {
                    if !ffi::PyErr_Occurred().is_null() {
                        return Err(Box::new(EncErr { msg: take_err(self.py), path: vec![Seg::Field(&f.name)] }));
                    }
                    x = missing(f)?;
                }
                self.nested(f.node, x, depth).map_err(|mut e| {
                    e.path.push(Seg::Field(&f.name));
                    e
                })?;
            }
            return Ok(());
        }
        if !self.is_mapping(v)? {
            return fail(format!("expected record {name} (dict), got {}", tname(self.py, v)));
        }
        let _h = Hold::new(v);
        for f in fields {
            let x = match self.lookup(v, f.key.as_ptr()) {
                Ok(Some(x)) => Owned(x),
                Ok(None) => Owned(new_ref(missing(f)?)),
                Err(mut e) => {
                    e.path.push(Seg::Field(&f.name));
                    return Err(e);
                }
            };
            self.nested(f.node, x.0, depth).map_err(|mut e| {
                e.path.push(Seg::Field(&f.name));
                e
            })?;
        }
        Ok(())
    }

    /// bytes-like input (bytes, bytearray, memoryview, any C-contiguous buffer).
    unsafe fn with_buffer(&mut self, v: *mut ffi::PyObject, what: &str, f: impl FnOnce(&mut Vec<u8>, &[u8])) -> ER<'s> {
        if ffi::PyBytes_Check(v) != 0 {
            let p = ffi::PyBytes_AsString(v);
            let n = ffi::PyBytes_Size(v);
            f(&mut self.out, std::slice::from_raw_parts(p.cast::<u8>(), n as usize));
            return Ok(());
        }
        if ffi::PyByteArray_Check(v) != 0 {
            let p = ffi::PyByteArray_AsString(v);
            let n = ffi::PyByteArray_Size(v);
            f(&mut self.out, std::slice::from_raw_parts(p.cast::<u8>(), n as usize));
            return Ok(());
        }
        if ffi::PyUnicode_Check(v) == 0 {
            let b = Bound::from_borrowed_ptr(self.py, v);
            if let Ok(buf) = pyo3::buffer::PyBuffer::<u8>::get(&b) {
                if buf.is_c_contiguous() {
                    let s = std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes());
                    f(&mut self.out, s);
                    return Ok(());
                }
            }
            ffi::PyErr_Clear();
        }
        fail(format!("expected {what} (bytes), got {}", tname(self.py, v)))
    }

    /// fastavro's prepare_timestamp_* / prepare_local_timestamp_*.
    #[cold]
    unsafe fn datetime_to_int(&self, v: *mut ffi::PyObject, unit: TimeUnit, local: bool) -> Result<i64, Box<EncErr<'s>>> {
        let py = self.py;
        let b = Bound::from_borrowed_ptr(py, v);
        let r = (|| -> PyResult<i128> {
            let tz = b.getattr("tzinfo")?;
            if local || !tz.is_none() {
                let dt = if local {
                    let kw = PyDict::new(py);
                    kw.set_item("tzinfo", self.cache.utc.bind(py))?;
                    b.call_method("replace", (), Some(&kw))?
                } else {
                    b.clone()
                };
                let delta = dt.sub(self.cache.epoch.bind(py))?;
                let days: i128 = delta.getattr("days")?.extract()?;
                let secs: i128 = delta.getattr("seconds")?.extract()?;
                let us: i128 = delta.getattr("microseconds")?.extract()?;
                Ok(match unit {
                    TimeUnit::Micros => (days * 86400 + secs) * 1_000_000 + us,
                    TimeUnit::Millis => (days * 86400 + secs) * 1000 + us / 1000,
                })
            } else {
                let tt = b.call_method0("timetuple")?;
                let secs: f64 = self.cache.mktime.bind(py).call1((tt,))?.extract()?;
                let us: i128 = b.getattr("microsecond")?.extract()?;
                let secs = secs as i128;
                Ok(match unit {
                    TimeUnit::Micros => secs * 1_000_000 + us,
                    TimeUnit::Millis => secs * 1000 + us / 1000,
                })
            }
        })();
        match r {
            Ok(x) if x >= i64::MIN as i128 && x <= i64::MAX as i128 => Ok(x as i64),
            Ok(x) => fail(format!("timestamp {x} out of 64-bit range")),
            Err(e) => fail(format!("cannot convert datetime: {e}")),
        }
    }
}

#[inline(always)]
unsafe fn missing<'s>(f: &'s Field) -> Result<*mut ffi::PyObject, Box<EncErr<'s>>> {
    match &f.default {
        Some(d) => Ok(d.as_ptr()),
        None if f.nullish => Ok(ffi::Py_None()),
        None => Err(Box::new(EncErr {
            msg: "missing from the record and has no default".into(),
            path: vec![Seg::Field(&f.name)],
        })),
    }
}

#[inline(always)]
unsafe fn new_ref(p: *mut ffi::PyObject) -> *mut ffi::PyObject {
    ffi::Py_INCREF(p);
    p
}

/// UTF-8 view of a str (None if it holds lone surrogates).
unsafe fn utf8<'a>(v: *mut ffi::PyObject) -> Option<&'a [u8]> {
    let mut n: ffi::Py_ssize_t = 0;
    let p = ffi::PyUnicode_AsUTF8AndSize(v, &mut n);
    if p.is_null() {
        ffi::PyErr_Clear();
        return None;
    }
    Some(std::slice::from_raw_parts(p.cast::<u8>(), n as usize))
}

/// numpy.bool_ (numpy.bool in numpy 2), accepted like fastavro's truthiness for boolean fields.
unsafe fn is_numpy_bool(py: Python<'_>, v: *mut ffi::PyObject) -> bool {
    let b = Bound::from_borrowed_ptr(py, v);
    let ty = b.get_type();
    let Ok(name) = ty.name() else { return false };
    let Ok(module) = ty.module() else { return false };
    let (name, module) = (name.to_string(), module.to_string());
    module == "numpy" && (name == "bool_" || name == "bool")
}
