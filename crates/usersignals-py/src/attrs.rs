//! An attribute of the batch's objects (`Event`, `Position`: msgspec structs) read through
//! the member descriptor its type declares, which is what `getattr` ends up calling for
//! them, without the generic lookup on the way there.
//!
//! `getattr(event, "user_id")` on a struct costs about 160 instructions: the generic
//! attribute lookup (the type's method cache, the descriptor checks) before the member
//! descriptor's getter, about 40. A 50,000-event run of bench/engine.py makes 400,000 such
//! reads (`BatchSession.select` and the column reader): 1,970.0 → 1,927.8 M engine-only
//! instructions read this way (callgrind, in batches of 10,000).

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple, PyType};

/// What `getattr(obj, name)` calls for instances of `ty`: the member descriptor `descr`
/// its MRO holds for the name, and that descriptor type's getter.
struct Member {
    ty: Py<PyType>,
    descr: Py<PyAny>,
    get: ffi::descrgetfunc,
}

/// One attribute name, read from many objects; the member descriptor of the first object's
/// type is found once, and objects of any other type are read with `getattr`.
pub(crate) struct Attr<'py> {
    name: Bound<'py, PyString>,
    /// `None` before the first read; `Some(None)` when the first type's attribute is not a
    /// plain member (then every read is a `getattr`).
    member: Option<Option<Member>>,
}

impl<'py> Attr<'py> {
    pub(crate) fn new(name: Bound<'py, PyString>) -> Self {
        Attr { name, member: None }
    }

    /// `getattr(obj, name)`, the same value or error.
    pub(crate) fn get(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = obj.py();
        let member = match &self.member {
            Some(member) => member,
            None => self.member.insert(member(&obj.get_type(), &self.name)?),
        };
        match member {
            Some(member) if obj.get_type_ptr() == member.ty.as_ptr().cast() => {
                // SAFETY: `get` is the `tp_descr_get` slot of `descr`'s type, called as
                // `PyObject_GenericGetAttr` calls it (descriptor, instance, the instance's
                // type), all three alive; it returns a new reference, or NULL with an error.
                unsafe {
                    let value =
                        (member.get)(member.descr.as_ptr(), obj.as_ptr(), member.ty.as_ptr());
                    Bound::from_owned_ptr_or_err(py, value)
                }
            }
            _ => obj.getattr(&self.name),
        }
    }
}

/// The member descriptor `getattr(instance of ty, name)` calls, if that is what it does:
/// `ty` keeps the generic attribute lookup (`object.__getattribute__`), and the first of its
/// MRO's dicts holding `name` (`_PyType_Lookup`'s search) holds a member descriptor, a data
/// descriptor, which the generic lookup calls before looking at an instance dict.
fn member(ty: &Bound<'_, PyType>, name: &Bound<'_, PyString>) -> PyResult<Option<Member>> {
    let py = ty.py();
    // SAFETY: slots of a live type and of `object` (static types: readable with
    // `PyType_GetSlot` since Python 3.10).
    let generic = unsafe {
        ffi::PyType_GetSlot(ty.as_ptr().cast(), ffi::Py_tp_getattro)
            == ffi::PyType_GetSlot(&raw mut ffi::PyBaseObject_Type, ffi::Py_tp_getattro)
    };
    if !generic {
        return Ok(None);
    }
    let mro = ty
        .getattr(pyo3::intern!(py, "__mro__"))?
        .cast_into::<PyTuple>()?;
    for class in mro.iter() {
        let namespace = class.getattr(pyo3::intern!(py, "__dict__"))?;
        if !namespace.contains(name)? {
            continue;
        }
        let descr = namespace.get_item(name)?;
        // SAFETY: the type of a live object; `PyMemberDescr_Type` is a static type, whose
        // `tp_descr_get` is a `descrgetfunc` (member_get).
        let get = unsafe {
            let descr_type = ffi::Py_TYPE(descr.as_ptr());
            if descr_type != &raw mut ffi::PyMemberDescr_Type {
                return Ok(None);
            }
            let slot = ffi::PyType_GetSlot(descr_type, ffi::Py_tp_descr_get);
            if slot.is_null() {
                return Ok(None);
            }
            std::mem::transmute::<*mut std::ffi::c_void, ffi::descrgetfunc>(slot)
        };
        return Ok(Some(Member {
            ty: ty.clone().unbind(),
            descr: descr.unbind(),
            get,
        }));
    }
    Ok(None)
}
