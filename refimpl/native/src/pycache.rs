//! Python objects looked up once per interpreter: the classes fastavro's validation tests
//! against (numbers.Integral, collections.abc.Mapping, ...) and the datetime pieces used by
//! the timestamp logical types. Why cached: these are needed on slow paths (numpy scalars,
//! datetimes, Mapping subclasses) and importing them per value would dominate.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

pub struct PyCache {
    pub integral: Py<PyAny>,
    pub real: Py<PyAny>,
    pub mapping: Py<PyAny>,
    pub sequence: Py<PyAny>,
    pub array_type: Py<PyAny>,
    pub datetime: Py<PyAny>,
    pub timedelta: Py<PyAny>,
    pub utc: Py<PyAny>,
    pub epoch: Py<PyAny>,
    pub epoch_naive: Py<PyAny>,
    pub mktime: Py<PyAny>,
    pub dash_type: Py<PyAny>,
}

static CACHE: PyOnceLock<PyCache> = PyOnceLock::new();

pub fn get(py: Python<'_>) -> PyResult<&'static PyCache> {
    CACHE.get_or_try_init(py, || {
        let numbers = py.import("numbers")?;
        let abc = py.import("collections.abc")?;
        let dt = py.import("datetime")?;
        let utc = dt.getattr("timezone")?.getattr("utc")?;
        let datetime = dt.getattr("datetime")?;
        let epoch = datetime.call1((1970, 1, 1, 0, 0, 0, 0, &utc))?;
        let epoch_naive = datetime.call1((1970, 1, 1))?;
        Ok(PyCache {
            integral: numbers.getattr("Integral")?.unbind(),
            real: numbers.getattr("Real")?.unbind(),
            mapping: abc.getattr("Mapping")?.unbind(),
            sequence: abc.getattr("Sequence")?.unbind(),
            array_type: py.import("array")?.getattr("array")?.unbind(),
            timedelta: dt.getattr("timedelta")?.unbind(),
            datetime: datetime.unbind(),
            utc: utc.unbind(),
            epoch: epoch.unbind(),
            epoch_naive: epoch_naive.unbind(),
            mktime: py.import("time")?.getattr("mktime")?.unbind(),
            dash_type: pyo3::types::PyString::intern(py, "-type").into_any().unbind(),
        })
    })
}
