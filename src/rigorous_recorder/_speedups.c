/* The per-value loops of the recorder's hot path, compiled.
 *
 * Built at install time when a C compiler is there (an optional extension);
 * _hotpath.py holds the pure-Python twins, with the same contracts, that are
 * used otherwise. Keep the two in step: tests/test_hotpath.py runs both on
 * the same inputs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>  /* T_OBJECT_EX and READONLY, named Py_T_OBJECT_EX and Py_READONLY since 3.12 */
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_READONLY READONLY
#endif
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* A value push() may store as it is: an exact float, int, str, bool, or None. */
static inline int
is_row_value(PyObject *value)
{
    PyTypeObject *kind = Py_TYPE(value);
    return kind == &PyFloat_Type || kind == &PyLong_Type || kind == &PyUnicode_Type
        || kind == &PyBool_Type || value == Py_None;
}

/* Truncate every column of `pending` to `rows` values (undo of a half-appended row),
 * keeping the exception that stopped the row, or setting one if there is none. */
static void
truncate_columns_keeping_error(PyObject *pending, Py_ssize_t rows)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *error = PyErr_GetRaisedException();
#else
    PyObject *type, *error, *traceback;
    PyErr_Fetch(&type, &error, &traceback);
#endif
    Py_ssize_t position = 0;
    PyObject *key, *column;
    while (PyDict_Next(pending, &position, &key, &column)) {
        if (PyList_CheckExact(column) && PyList_GET_SIZE(column) > rows) {
            PyList_SetSlice(column, rows, PyList_GET_SIZE(column), NULL);
        }
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(error);
#else
    PyErr_Restore(type, error, traceback);
#endif
    if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_RuntimeError, "a column of the pending rows went away");
    }
}

/* Interned attribute names of a recorder (the holder), set when the module is executed. */
static PyObject *empty_string = NULL;  /* "", made when the module is executed */
static PyObject *pending_name = NULL, *staged_name = NULL, *store_name = NULL, *failure_name = NULL,
                *fast_name = NULL, *direct_name = NULL;

/* One attribute of a holder: read and written by name, or, when `offset` is not 0, straight in
 * the slot at that offset, as its member descriptor would (the recorder class's own methods
 * know its layout: a generic attribute lookup costs more than the rest of a staging). */
typedef struct {
    PyObject **name;
    Py_ssize_t offset;
} Attribute;

typedef struct {
    Attribute pending, staged, store, fast, direct;
} Layout;

static Layout by_name = {{&pending_name, 0}, {&staged_name, 0}, {&store_name, 0}, {&fast_name, 0}, {&direct_name, 0}};
static Layout recorder_layout = {{&pending_name, 0}, {&staged_name, 0}, {&store_name, 0}, {&fast_name, 0},
                                 {&direct_name, 0}};

/* A new reference to the attribute's value, NULL with an error if it has none. No Python code
 * runs for a slot. */
static inline PyObject *
read_attribute(PyObject *holder, const Attribute *attribute)
{
    if (attribute->offset == 0) {
        return PyObject_GetAttr(holder, *attribute->name);
    }
    PyObject *value = *(PyObject **)((char *)holder + attribute->offset);
    if (value == NULL) {
        PyErr_SetObject(PyExc_AttributeError, *attribute->name);
        return NULL;
    }
    return Py_NewRef(value);
}

/* Set the attribute (the old value is released); -1 on error. */
static inline int
write_attribute(PyObject *holder, const Attribute *attribute, PyObject *value)
{
    if (attribute->offset == 0) {
        return PyObject_SetAttr(holder, *attribute->name, value);
    }
    Py_XSETREF(*(PyObject **)((char *)holder + attribute->offset), Py_NewRef(value));
    return 0;
}
/* rigorous_recorder._values.RESERVED_KEYS: keys the staging fast path leaves to the general one. */
static PyObject *reserved_keys = NULL;

/* Append each value of `values` to its column of `pending` when every key is a str naming a
 * column, both dicts have as many keys (at least one), every value is a row value, and the
 * new row count stays under `limit`.
 * Returns the new row count, 0 (nothing changed) when the row does not qualify, -1 on error
 * (nothing changed either). No Python code runs: the caller's read of `pending` and this
 * append are one step no other thread can split. */
static Py_ssize_t
append_row(PyObject *pending, PyObject *values, Py_ssize_t limit)
{
    Py_ssize_t size = PyDict_GET_SIZE(values);
    if (size == 0 || size != PyDict_GET_SIZE(pending)) {
        return 0;
    }
    /* First pass: check everything, change nothing. */
    Py_ssize_t position = 0, rows = 0;
    PyObject *key, *value, *column;
    while (PyDict_Next(values, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !is_row_value(value)) {
            return 0;
        }
        column = PyDict_GetItemWithError(pending, key);
        if (column == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        if (!PyList_CheckExact(column)) {
            return 0;
        }
        rows = PyList_GET_SIZE(column);
    }
    if (rows + 1 >= limit) {
        return 0;
    }
    /* Second pass: append. No Python code runs between the passes (exact str keys,
     * list appends), so every lookup succeeds; only memory can run out halfway. */
    position = 0;
    while (PyDict_Next(values, &position, &key, &value)) {
        column = PyDict_GetItemWithError(pending, key);
        if (column == NULL || PyList_Append(column, value) < 0) {
            truncate_columns_keeping_error(pending, rows);
            return -1;
        }
    }
    return rows + 1;
}

PyDoc_STRVAR(append_plain_row_doc,
"append_plain_row(pending, values) -> int\n\n"
"`pending` is a dict of lists, or an object whose `_pending` attribute is one (read\n"
"here, so that reading it and appending is one step no other thread can split).\n"
"Append each value of the dict `values` to the list `pending[key]` and return the\n"
"new row count, when every key is a str naming a column of `pending`, both dicts\n"
"have as many keys (at least one), and every value is an exact float, int, str,\n"
"bool or None. Otherwise change nothing and return 0.");

static PyObject *
append_plain_row(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "append_plain_row() takes a holder of pending rows and a dict");
        return NULL;
    }
    PyObject *pending = args[0];
    if (!PyDict_CheckExact(pending)) {
        PyObject *held = PyObject_GetAttr(pending, pending_name);  /* a slot: no Python code runs */
        if (held == NULL) {
            return NULL;
        }
        Py_DECREF(held);  /* the holder keeps it alive while this call runs */
        if (!PyDict_CheckExact(held)) {
            PyErr_SetString(PyExc_TypeError, "append_plain_row(): _pending is not a dict");
            return NULL;
        }
        pending = held;
    }
    Py_ssize_t rows = append_row(pending, args[1], PY_SSIZE_T_MAX);
    return rows < 0 ? NULL : PyLong_FromSsize_t(rows);
}

/* 1 when `key` is a non-empty ASCII str that is not reserved and `value` a row value, else 0; -1 on error. */
static int
is_plain_pair(PyObject *key, PyObject *value)
{
    if (!is_row_value(value) || !PyUnicode_CheckExact(key)) {
        return 0;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(key) < 0) {
        return -1;
    }
#endif
    if (PyUnicode_GET_LENGTH(key) == 0 || !PyUnicode_IS_ASCII(key)) {
        return 0;
    }
    int reserved = PySet_Contains(reserved_keys, key);
    return reserved == 0 ? 1 : (reserved < 0 ? -1 : 0);
}

/* is_plain_pair for every item of the dict `values` (None: no items). */
static int
all_plain(PyObject *values)
{
    Py_ssize_t position = 0;
    PyObject *key, *value;
    int plain = 1;
    while (plain == 1 && values != Py_None && PyDict_Next(values, &position, &key, &value)) {
        plain = is_plain_pair(key, value);
    }
    return plain;
}

/* Set holder._staged and holder._fast (slots: no Python code runs); -1 on error. */
static int
set_staged_and_fast(PyObject *holder, const Layout *layout, PyObject *staged, PyObject *fast)
{
    if (write_attribute(holder, &layout->staged, staged) < 0) {
        return -1;
    }
    return write_attribute(holder, &layout->fast, fast);
}

/* Keyword arguments of a vectorcall: `count` names and their values. */
typedef struct {
    PyObject *names;
    PyObject *const *values;
    Py_ssize_t count;
} Keywords;

/* The staging of add(): `data` (None or a dict), then `values` (a dict, or NULL: then `keywords`),
 * into holder._staged, when every pair is plain and the holder's store has not failed.
 * 1: staged; 0: not plain, nothing changed; -1: error. */
static int
stage(PyObject *holder, const Layout *layout, PyObject *data, PyObject *values, const Keywords *keywords)
{
    if (data != Py_None && !PyDict_CheckExact(data)) {
        return 0;
    }
    int plain = all_plain(data);
    if (plain == 1 && values != NULL) {
        plain = all_plain(values);
    }
    for (Py_ssize_t i = 0; plain == 1 && values == NULL && i < keywords->count; i++) {
        plain = is_plain_pair(PyTuple_GET_ITEM(keywords->names, i), keywords->values[i]);
    }
    if (plain <= 0) {
        return plain;
    }
    PyObject *store = read_attribute(holder, &layout->store);
    if (store == NULL) {
        return -1;
    }
    PyObject *failure = PyObject_GetAttr(store, failure_name);
    Py_DECREF(store);
    if (failure == NULL) {
        return -1;
    }
    Py_DECREF(failure);
    if (failure != Py_None) {
        return 0;
    }
    PyObject *staged = read_attribute(holder, &layout->staged);
    if (staged == NULL) {
        return -1;
    }
    int fresh = staged == Py_None;
    if (fresh) {
        Py_DECREF(staged);
        if (data == Py_None && values != NULL) {
            staged = Py_NewRef(values);  /* the caller's own dict: kept as it is */
            values = NULL;
            keywords = NULL;
        } else {
            staged = data == Py_None ? PyDict_New() : PyDict_Copy(data);
            if (staged == NULL) {
                return -1;
            }
            data = Py_None;
        }
    } else if (!PyDict_CheckExact(staged)) {
        Py_DECREF(staged);
        return 0;
    }
    int failed = data != Py_None && PyDict_Update(staged, data) < 0;
    if (!failed && values != NULL) {
        failed = PyDict_Update(staged, values) < 0;
    }
    for (Py_ssize_t i = 0; !failed && values == NULL && keywords != NULL && i < keywords->count; i++) {
        failed = PyDict_SetItem(staged, PyTuple_GET_ITEM(keywords->names, i), keywords->values[i]) < 0;
    }
    if (!failed && fresh) {
        failed = set_staged_and_fast(holder, layout, staged, Py_False) < 0;
    }
    Py_DECREF(staged);
    return failed ? -1 : 1;
}

PyDoc_STRVAR(stage_plain_values_doc,
"stage_plain_values(holder, data, values) -> bool\n\n"
"Stage the values of `data` (None or a dict), then of the dict `values`, into\n"
"`holder._staged` and return True, when every key is a non-empty ASCII str that is\n"
"not reserved, every value is an exact float, int, str, bool or None, and\n"
"`holder._store.failure` is None. `_staged` None becomes a new dict (`values` itself\n"
"when `data` is None: pass a dict nobody else holds, as `**values` is) and\n"
"`holder._fast` becomes False; a dict is updated. Otherwise change nothing and\n"
"return False.");

static PyObject *
stage_plain_values(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "stage_plain_values() takes a holder, None or a dict, and a dict");
        return NULL;
    }
    int staged = stage(args[0], &by_name, args[1], args[2], NULL);
    return staged < 0 ? NULL : PyBool_FromLong(staged);
}

/* The record class's slot descriptors, looked up at its first use; an empty tuple for its tp_new. */
static PyObject *record_class = NULL, *record_slots[3] = {NULL, NULL, NULL}, *no_arguments = NULL;
static const char *record_slot_names[3] = {"_columns", "_index", "_recorder"};

/* record_class(columns, index, recorder) without running its Python __init__, which only sets
 * those three slots: its tp_new (object's) and the slots' descriptors do the same, ~5x faster. */
static PyObject *
new_record(PyObject *kind, PyObject *columns, PyObject *index, PyObject *recorder)
{
    if (kind != record_class) {
        if (!PyType_Check(kind)) {
            PyErr_SetString(PyExc_TypeError, "commit_staged_row(): the record class is not a class");
            return NULL;
        }
        PyObject *found[3] = {NULL, NULL, NULL};
        for (int i = 0; i < 3; i++) {
            found[i] = PyObject_GetAttrString(kind, record_slot_names[i]);
            if (found[i] == NULL || Py_TYPE(found[i]) != &PyMemberDescr_Type) {
                for (int j = 0; j <= i; j++) {
                    Py_XDECREF(found[j]);
                }
                if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_AttributeError)) {
                    PyErr_Clear();
                    PyErr_Format(PyExc_TypeError, "commit_staged_row(): %R has no slot %s",
                                 kind, record_slot_names[i]);
                }
                return NULL;
            }
        }
        for (int i = 0; i < 3; i++) {
            Py_XSETREF(record_slots[i], found[i]);
        }
        Py_XSETREF(record_class, Py_NewRef(kind));
    }
    PyTypeObject *type = (PyTypeObject *)kind;
    PyObject *record = type->tp_new(type, no_arguments, NULL);
    if (record == NULL) {
        return NULL;
    }
    PyObject *values[3] = {columns, index, recorder};
    for (int i = 0; i < 3; i++) {
        if (Py_TYPE(record_slots[i])->tp_descr_set(record_slots[i], record, values[i]) < 0) {
            Py_DECREF(record);
            return NULL;
        }
    }
    return record;
}

/* The commit of a staged row (see commit_staged_row), declining a row that would make `limit`
 * rows or more: a new reference to the record, to None when declined, NULL on error. */
static PyObject *
commit_row(PyObject *holder, const Layout *layout, PyObject *kind, Py_ssize_t limit)
{
    PyObject *direct = read_attribute(holder, &layout->direct);
    if (direct == NULL) {
        return NULL;
    }
    Py_DECREF(direct);
    if (direct != Py_True) {
        Py_RETURN_NONE;
    }
    PyObject *staged = read_attribute(holder, &layout->staged);
    if (staged == NULL) {
        return NULL;
    }
    PyObject *pending = read_attribute(holder, &layout->pending);  /* slots: no Python code runs */
    if (pending == NULL) {
        Py_DECREF(staged);
        return NULL;
    }
    Py_ssize_t rows = PyDict_CheckExact(staged) && PyDict_CheckExact(pending) ? append_row(pending, staged, limit) : 0;
    Py_DECREF(staged);  /* the holder keeps it alive until it is replaced just below */
    PyObject *record = NULL;
    if (rows > 0 && set_staged_and_fast(holder, layout, Py_None, Py_True) == 0) {
        PyObject *index = PyLong_FromSsize_t(rows - 1);
        if (index != NULL) {
            record = new_record(kind, pending, index, holder);
            Py_DECREF(index);
        }
    } else if (rows == 0) {
        record = Py_NewRef(Py_None);
    }
    Py_DECREF(pending);
    return record;
}

PyDoc_STRVAR(commit_staged_row_doc,
"commit_staged_row(holder, record_class) -> record | None\n\n"
"When `holder._direct` is True and `holder._staged` is a dict that\n"
"append_plain_row(holder, staged) appends (reading `holder._pending` in the same\n"
"step), set `_staged` to None and `_fast` to True and return a new\n"
"record_class(columns, index, holder) for the row (made by its __new__ and its slots\n"
"`_columns`, `_index`, `_recorder`: its __init__ must only set them). Otherwise change\n"
"nothing and return None.");

static PyObject *
commit_staged_row(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "commit_staged_row() takes a holder and a record class");
        return NULL;
    }
    return commit_row(args[0], &by_name, args[1], PY_SSIZE_T_MAX);
}

/* -- add() and commit() as compiled methods ---------------------------------------------------
 *
 * A Python method costs a frame, and add(**values) a dict, per call: more than the staging
 * itself. compile_methods() makes add and commit C methods of the recorder class that do the
 * plain cases above in place, and hand every other call, unchanged, to the Python methods
 * they replace (kept here), which hold the whole behaviour. */

static PyObject *python_add = NULL, *python_commit = NULL, *method_record_class = NULL;
static PyObject *add_doc = NULL, *commit_doc = NULL;  /* keep the docs the method defs point to */
static Py_ssize_t method_batch_rows = 0;

/* function(self, *args, **keywords) of a vectorcall whose arguments were `args` and `names`. */
static PyObject *
call_python(PyObject *function, PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *names)
{
    Py_ssize_t total = nargs + (names == NULL ? 0 : PyTuple_GET_SIZE(names));
    PyObject *small[8];
    PyObject **stack = total < 8 ? small : PyMem_Malloc((total + 1) * sizeof(PyObject *));
    if (stack == NULL) {
        return PyErr_NoMemory();
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < total; i++) {
        stack[i + 1] = args[i];
    }
    PyObject *result = PyObject_Vectorcall(function, stack, nargs + 1, names);
    if (stack != small) {
        PyMem_Free(stack);
    }
    return result;
}

static PyObject *
recorder_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *names)
{
    if (nargs <= 1) {
        Keywords keywords = {names, args + nargs, names == NULL ? 0 : PyTuple_GET_SIZE(names)};
        int staged = stage(self, &recorder_layout, nargs ? args[0] : Py_None, NULL, &keywords);
        if (staged != 0) {
            return staged < 0 ? NULL : Py_NewRef(self);
        }
    }
    return call_python(python_add, self, args, nargs, names);
}

static PyObject *
recorder_commit(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *names)
{
    if (nargs == 0 && (names == NULL || PyTuple_GET_SIZE(names) == 0)) {
        /* a row that completes a batch goes to the Python commit, which seals it */
        PyObject *record = commit_row(self, &recorder_layout, method_record_class, method_batch_rows);
        if (record != Py_None) {
            return record;
        }
        Py_DECREF(record);
    }
    return call_python(python_commit, self, args, nargs, names);
}

static PyMethodDef add_def = {"add", (PyCFunction)(void (*)(void))recorder_add, METH_FASTCALL | METH_KEYWORDS, NULL};
static PyMethodDef commit_def = {"commit", (PyCFunction)(void (*)(void))recorder_commit,
                                 METH_FASTCALL | METH_KEYWORDS, NULL};

/* Replace the Python method `def->ml_name` of `kind` by a C method with its doc and signature;
 * the Python one goes to *python. */
static int
compile_method(PyTypeObject *kind, PyMethodDef *def, const char *signature, PyObject **python, PyObject **doc)
{
    PyObject *function = PyObject_GetAttrString((PyObject *)kind, def->ml_name);
    if (function == NULL) {
        return -1;
    }
    if (!PyFunction_Check(function)) {
        Py_DECREF(function);
        PyErr_Format(PyExc_TypeError, "compile_methods(): %s.%s is not a Python function (compiled already?)",
                     kind->tp_name, def->ml_name);
        return -1;
    }
    PyObject *text = PyObject_GetAttrString(function, "__doc__");
    if (text == NULL) {
        Py_DECREF(function);
        return -1;
    }
    Py_XSETREF(*doc, PyUnicode_FromFormat("%s%s\n--\n\n%U", def->ml_name, signature,
                                          text == Py_None ? NULL : text));
    Py_DECREF(text);
    if (*doc == NULL || (def->ml_doc = PyUnicode_AsUTF8(*doc)) == NULL) {
        Py_DECREF(function);
        return -1;
    }
    PyObject *method = PyDescr_NewMethod(kind, def);
    int failed = method == NULL || PyObject_SetAttrString((PyObject *)kind, def->ml_name, method) < 0;
    Py_XDECREF(method);
    if (failed) {
        Py_DECREF(function);
        return -1;
    }
    Py_XSETREF(*python, function);
    return 0;
}

/* Set attribute->offset to the offset of the slot of that name in `kind`'s instances; -1 on error. */
static int
slot_offset(PyTypeObject *kind, Attribute *attribute)
{
    PyObject *descriptor = PyObject_GetAttr((PyObject *)kind, *attribute->name);
    if (descriptor == NULL) {
        return -1;
    }
    int is_slot = Py_TYPE(descriptor) == &PyMemberDescr_Type
        && ((PyMemberDescrObject *)descriptor)->d_member->type == Py_T_OBJECT_EX
        && !(((PyMemberDescrObject *)descriptor)->d_member->flags & Py_READONLY);
    if (is_slot) {
        attribute->offset = ((PyMemberDescrObject *)descriptor)->d_member->offset;
    } else {
        PyErr_Format(PyExc_TypeError, "compile_methods(): %s.%U is not a slot", kind->tp_name, *attribute->name);
    }
    Py_DECREF(descriptor);
    return is_slot ? 0 : -1;
}

PyDoc_STRVAR(compile_methods_doc,
"compile_methods(recorder_class, record_class, batch_rows) -> dict\n\n"
"Replace the Python methods add and commit of `recorder_class` by C methods with\n"
"their docs: add stages plain values as stage_plain_values does; commit appends a\n"
"staged row as commit_staged_row does, with `record_class`, when the row leaves the\n"
"unsealed rows under `batch_rows`. Every other call goes, as it was made, to the\n"
"Python method replaced. The C methods read and write the slots `_pending`, `_staged`,\n"
"`_store`, `_fast` and `_direct` of `recorder_class` in place (a TypeError if one is\n"
"not a slot). Returns the Python methods replaced, by name.");

static PyObject *
compile_methods(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1]) || !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "compile_methods() takes a recorder class, a record class and an int");
        return NULL;
    }
    Py_ssize_t batch_rows = PyLong_AsSsize_t(args[2]);
    if (batch_rows == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyTypeObject *kind = (PyTypeObject *)args[0];
    Attribute *attributes[5] = {&recorder_layout.pending, &recorder_layout.staged, &recorder_layout.store,
                                &recorder_layout.fast, &recorder_layout.direct};
    for (int i = 0; i < 5; i++) {
        if (slot_offset(kind, attributes[i]) < 0) {
            return NULL;
        }
    }
    if (compile_method(kind, &add_def, "($self, data=None, /, **values)", &python_add, &add_doc) < 0
            || compile_method(kind, &commit_def, "($self, *, additional_info=None)", &python_commit,
                              &commit_doc) < 0) {
        return NULL;
    }
    Py_XSETREF(method_record_class, Py_NewRef(args[1]));
    method_batch_rows = batch_rows;
    return Py_BuildValue("{sOsO}", "add", python_add, "commit", python_commit);
}

PyDoc_STRVAR(pack_column_doc,
"pack_column(values) -> (kind, buffers, validity, null_count) | None\n\n"
"Pack a list of one kind of plain value, None meaning missing, into the buffers of an\n"
"Arrow array. kind 'd': float64, ints among floats widen, buffers (data,); 'q': int64,\n"
"(data,); 'b': bool, (bits,); 's': utf8 string, (int32 offsets, data). `validity` is\n"
"an LSB-first bitmap, None when nothing is missing. None when the list mixes kinds\n"
"(other than ints with floats), holds anything else, holds no value at all, or a value\n"
"does not fit (an int beyond the type, a str that is not valid UTF-8, over 2 GiB of\n"
"text).");

/* An LSB-first bitmap of `count` values: bit i is set when (values[i] is `target`) == `is`. */
static PyObject *
bitmap_of(PyObject *values, Py_ssize_t count, PyObject *target, int is)
{
    Py_ssize_t size = (count + 7) / 8;
    PyObject *bitmap = PyBytes_FromStringAndSize(NULL, size);
    if (bitmap == NULL) {
        return NULL;
    }
    unsigned char *bits = (unsigned char *)PyBytes_AS_STRING(bitmap);
    memset(bits, 0, size);
    for (Py_ssize_t i = 0; i < count; i++) {
        if ((PyList_GET_ITEM(values, i) == target) == is) {
            bits[i >> 3] |= (unsigned char)(1u << (i & 7));
        }
    }
    return bitmap;
}

/* float64 or int64 values, 8 bytes each (0 where missing); NULL with OverflowError if one does not fit. */
static PyObject *
pack_numbers(PyObject *values, Py_ssize_t count, int as_float)
{
    PyObject *data = PyBytes_FromStringAndSize(NULL, count * 8);
    if (data == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(data);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        if (value == Py_None) {
            memset(out + i * 8, 0, 8);
        } else if (as_float) {
            double number;
            if (PyFloat_CheckExact(value)) {
                number = PyFloat_AS_DOUBLE(value);
            } else {  /* an int among floats widens, but only one int64 can hold: others do not fit */
                int64_t whole = PyLong_AsLongLong(value);
                if (whole == -1 && PyErr_Occurred()) {
                    Py_DECREF(data);
                    return NULL;
                }
                number = (double)whole;
            }
            if (number == -1.0 && PyErr_Occurred()) {
                Py_DECREF(data);
                return NULL;
            }
            memcpy(out + i * 8, &number, 8);
        } else {
            int64_t number = PyLong_AsLongLong(value);
            if (number == -1 && PyErr_Occurred()) {
                Py_DECREF(data);
                return NULL;
            }
            memcpy(out + i * 8, &number, 8);
        }
    }
    return data;
}

/* (int32 offsets, UTF-8 data); NULL with UnicodeEncodeError or OverflowError if it does not fit. */
static PyObject *
pack_strings(PyObject *values, Py_ssize_t count)
{
    Py_ssize_t total = 0, size;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        if (value != Py_None) {
            if (PyUnicode_AsUTF8AndSize(value, &size) == NULL) {
                return NULL;  /* a lone surrogate */
            }
            total += size;
            if (total > INT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "over 2 GiB of text in one batch");
                return NULL;
            }
        }
    }
    PyObject *offsets = PyBytes_FromStringAndSize(NULL, (count + 1) * 4);
    PyObject *data = PyBytes_FromStringAndSize(NULL, total);
    if (offsets == NULL || data == NULL) {
        Py_XDECREF(offsets);
        Py_XDECREF(data);
        return NULL;
    }
    char *out = PyBytes_AS_STRING(data), *ends = PyBytes_AS_STRING(offsets);
    int32_t end = 0;
    memcpy(ends, &end, 4);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        if (value != Py_None) {
            const char *text = PyUnicode_AsUTF8AndSize(value, &size);  /* cached by the first pass */
            memcpy(out + end, text, size);
            end += (int32_t)size;
        }
        memcpy(ends + (i + 1) * 4, &end, 4);
    }
    return Py_BuildValue("(NN)", offsets, data);
}

static PyObject *
pack_column(PyObject *module, PyObject *values)
{
    if (!PyList_CheckExact(values)) {
        PyErr_SetString(PyExc_TypeError, "pack_column() takes a list");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(values), floats = 0, ints = 0, bools = 0, strings = 0, missing = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        PyTypeObject *kind = Py_TYPE(value);
        if (kind == &PyFloat_Type) {
            floats++;
        } else if (kind == &PyLong_Type) {
            ints++;
        } else if (kind == &PyBool_Type) {
            bools++;
        } else if (kind == &PyUnicode_Type) {
            strings++;
        } else if (value == Py_None) {
            missing++;
        } else {
            Py_RETURN_NONE;
        }
    }
    const char *code;
    PyObject *buffers;
    if (floats + ints == count - missing && floats + ints > 0) {
        code = floats ? "d" : "q";
        PyObject *data = pack_numbers(values, count, floats > 0);
        buffers = data == NULL ? NULL : PyTuple_Pack(1, data);
        Py_XDECREF(data);
    } else if (bools == count - missing && bools > 0) {
        code = "b";
        PyObject *data = bitmap_of(values, count, Py_True, 1);  /* 0 where missing */
        buffers = data == NULL ? NULL : PyTuple_Pack(1, data);
        Py_XDECREF(data);
    } else if (strings == count - missing && strings > 0) {
        code = "s";
        buffers = pack_strings(values, count);
    } else {
        Py_RETURN_NONE;
    }
    if (buffers == NULL) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError) || PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            Py_RETURN_NONE;  /* does not fit: the general path stores it */
        }
        return NULL;
    }
    PyObject *validity = missing ? bitmap_of(values, count, Py_None, 0) : Py_NewRef(Py_None);
    if (validity == NULL) {
        Py_DECREF(buffers);
        return NULL;
    }
    return Py_BuildValue("(sNNn)", code, buffers, validity, missing);
}

PyDoc_STRVAR(float32_seen_doc,
"float32_seen(value) -> float\n\n"
"A float that is a float32 value, as the shortest decimal that gives that float32 back:\n"
"Python's '%.7g', or '%.6g' when that gives the float32 back too, else '%.8g' when that\n"
"does, else '%.9g', parsed by float(). Any other float (NaN, one between two float32\n"
"values, one past float32's range) is returned as it is; TypeError when value is not a\n"
"float.");

/* The IEEE bits of `number` rounded to float32, as struct.pack("f") rounds it (past float32's
 * range: an infinity's, where struct.pack raises OverflowError). */
static inline uint32_t
float32_bits(double number)
{
    float narrow = (float)number;
    uint32_t bits;
    memcpy(&bits, &narrow, sizeof bits);
    return bits;
}

#if defined(__SIZEOF_INT128__) && defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define EXACT_DECIMALS
typedef unsigned __int128 uint128;

/* 10^0 to 10^22, each exactly a double: an integer of at most 15 digits times, or divided by,
 * one of them is rounded once, so it is the double float() parses from that decimal. */
static const double exact_tens[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
    1e20, 1e21, 1e22,
};
#define EXACT_TENS ((int)(sizeof exact_tens / sizeof exact_tens[0]) - 1)
#define WIDE_BITS 126  /* the integers below stay under this many bits: twice one fits 128 */

static inline uint128
ten_to(int power)
{
    uint128 result = 1;
    while (power-- > 0) {
        result *= 10;
    }
    return result;
}

/* Set *decimal to float("%.<digits>g" % x) for x = mantissa * 2^exponent (mantissa > 0, negated
 * when `negative`) and return 1, in integers: x / 10^k rounded half to even (as Python's
 * formatting rounds) to `digits` digits, times 10^k in one exact-operand double operation. 0 when
 * the integers would pass WIDE_BITS bits or 10^|k| is not an exact double: Python's way then. */
static int
exact_decimal(uint32_t mantissa, int exponent, int digits, int negative, double *decimal)
{
    int bit_length = 32 - __builtin_clz(mantissa);
    /* floor(log10(x)), or one less: floor(log2(x)) * log10(2), with 78913 / 2^18 just under
     * log10(2), is never above it for the exponents of normal float32 values (-126 to 127). */
    int magnitude = ((exponent + bit_length - 1) * 78913) >> 18;
    for (;;) {
        int k = magnitude - digits + 1;
        int up = exponent > 0 ? exponent : 0, down = exponent < 0 ? -exponent : 0;
        if (k < -EXACT_TENS || k > EXACT_TENS || bit_length + up + 4 * (k < 0 ? -k : 0) > WIDE_BITS
                || down + 4 * (k > 0 ? k : 0) > WIDE_BITS) {
            return 0;
        }
        uint128 numerator = ((uint128)mantissa << up) * (k < 0 ? ten_to(-k) : 1);
        uint128 denominator = ((uint128)1 << down) * (k > 0 ? ten_to(k) : 1);
        uint128 quotient = numerator / denominator, remainder = numerator - quotient * denominator;
        if (quotient >= ten_to(digits)) {
            magnitude++;  /* the estimate was one less */
            continue;
        }
        if (2 * remainder > denominator || (2 * remainder == denominator && (quotient & 1))) {
            quotient++;
        }
        double value = (double)(uint64_t)quotient;
        value = k >= 0 ? value * exact_tens[k] : value / exact_tens[-k];
        *decimal = negative ? -value : value;
        return 1;
    }
}
#endif

/* Set *decimal to float("%.<digits>g" % number) for the float32 value `number` whose bits are
 * `bits`; return whether that decimal rounds to the same float32, or -1 with an error set. */
static int
decimal_gives(double number, int digits, uint32_t bits, double *decimal)
{
    int exact = 0;
#ifdef EXACT_DECIMALS
    uint32_t field = (bits >> 23) & 0xFFu;  /* 0: zero or subnormal, 0xFF: infinity, else normal */
    exact = field != 0 && field != 0xFFu
        && exact_decimal((bits & 0x7FFFFFu) | 0x800000u, (int)field - 150, digits, (int)(bits >> 31), decimal);
#endif
    if (!exact) {  /* Python's own formatting and parsing */
        char *text = PyOS_double_to_string(number, 'g', digits, 0, NULL);
        if (text == NULL) {
            return -1;
        }
        *decimal = PyOS_string_to_double(text, NULL, NULL);
        PyMem_Free(text);
        if (*decimal == -1.0 && PyErr_Occurred()) {
            return -1;
        }
    }
    return float32_bits(*decimal) == bits;
}

static PyObject *
float32_seen(PyObject *module, PyObject *value)
{
    if (!PyFloat_Check(value)) {
        PyErr_Format(PyExc_TypeError, "float32_seen() takes a float, not %.100s", Py_TYPE(value)->tp_name);
        return NULL;
    }
    double number = PyFloat_AS_DOUBLE(value);
    if ((double)(float)number != number) {
        return Py_NewRef(value);  /* not a float32 value (or NaN, or past float32's range): kept as it is */
    }
    uint32_t bits = float32_bits(number);
    /* Two tries for nearly every value (9 digits always give a float32 back; fewer than 6 digits
     * that do are what 6 digits round to). 7 first: a quarter of float32 values take 6 or 7 digits. */
    double seven, shorter;
    int gives = decimal_gives(number, 7, bits, &seven);
    if (gives == 1) {
        gives = decimal_gives(number, 6, bits, &shorter);
        return gives < 0 ? NULL : PyFloat_FromDouble(gives ? shorter : seven);
    }
    if (gives == 0) {  /* then 6 digits do not either: see the Python twin */
        gives = decimal_gives(number, 8, bits, &shorter);
        if (gives == 0) {
            gives = decimal_gives(number, 9, bits, &shorter) < 0 ? -1 : 1;
        }
    }
    return gives < 0 ? NULL : PyFloat_FromDouble(shorter);
}

PyDoc_STRVAR(seen_logs_doc,
"seen_logs(logs, prefix='') -> dict\n\n"
"A new dict of the mapping `logs` (None: empty): each key with the str `prefix` before it\n"
"(the key as it is when `prefix` is empty), each exact float value through float32_seen,\n"
"other values as they are.");

/* seen[prefix + key] = value, through float32_seen when it is an exact float; -1 with an error. */
static int
put_seen(PyObject *seen, PyObject *prefix, PyObject *key, PyObject *value)
{
    PyObject *name = PyUnicode_GET_LENGTH(prefix) ? PyUnicode_Concat(prefix, key) : Py_NewRef(key);
    if (name == NULL) {
        return -1;
    }
    value = PyFloat_CheckExact(value) ? float32_seen(NULL, value) : Py_NewRef(value);
    int result = value == NULL ? -1 : PyDict_SetItem(seen, name, value);
    Py_DECREF(name);
    Py_XDECREF(value);
    return result;
}

static PyObject *
seen_logs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2 || (nargs == 2 && !PyUnicode_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "seen_logs() takes a mapping of logs (or None) and a str prefix");
        return NULL;
    }
    PyObject *logs = args[0], *prefix = nargs == 2 ? args[1] : empty_string;
    PyObject *seen = PyDict_New();
    if (seen == NULL || logs == Py_None) {
        return seen;
    }
    PyObject *key, *value;
    if (PyDict_CheckExact(logs)) {
        Py_ssize_t position = 0;
        while (PyDict_Next(logs, &position, &key, &value)) {
            if (put_seen(seen, prefix, key, value) < 0) {
                Py_DECREF(seen);
                return NULL;
            }
        }
        return seen;
    }
    PyObject *items = PyMapping_Items(logs);  /* another mapping: its items() */
    if (items == NULL) {
        Py_DECREF(seen);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        if (!PyArg_ParseTuple(PyList_GET_ITEM(items, i), "OO", &key, &value)
                || put_seen(seen, prefix, key, value) < 0) {
            Py_DECREF(items);
            Py_DECREF(seen);
            return NULL;
        }
    }
    Py_DECREF(items);
    return seen;
}

static PyMethodDef speedups_methods[] = {
    {"append_plain_row", (PyCFunction)(void (*)(void))append_plain_row, METH_FASTCALL, append_plain_row_doc},
    {"stage_plain_values", (PyCFunction)(void (*)(void))stage_plain_values, METH_FASTCALL, stage_plain_values_doc},
    {"commit_staged_row", (PyCFunction)(void (*)(void))commit_staged_row, METH_FASTCALL, commit_staged_row_doc},
    {"compile_methods", (PyCFunction)(void (*)(void))compile_methods, METH_FASTCALL, compile_methods_doc},
    {"pack_column", pack_column, METH_O, pack_column_doc},
    {"float32_seen", float32_seen, METH_O, float32_seen_doc},
    {"seen_logs", (PyCFunction)(void (*)(void))seen_logs, METH_FASTCALL, seen_logs_doc},
    {NULL, NULL, 0, NULL},
};

static int
intern_into(PyObject **name, const char *text)
{
    if (*name == NULL) {
        *name = PyUnicode_InternFromString(text);
    }
    return *name == NULL ? -1 : 0;
}

static int
speedups_exec(PyObject *module)
{
    if (intern_into(&pending_name, "_pending") < 0 || intern_into(&staged_name, "_staged") < 0
            || intern_into(&store_name, "_store") < 0 || intern_into(&failure_name, "failure") < 0
            || intern_into(&fast_name, "_fast") < 0 || intern_into(&direct_name, "_direct") < 0
            || intern_into(&empty_string, "") < 0) {
        return -1;
    }
    if (no_arguments == NULL) {
        no_arguments = PyTuple_New(0);
        if (no_arguments == NULL) {
            return -1;
        }
    }
    if (reserved_keys == NULL) {
        PyObject *values = PyImport_ImportModule("rigorous_recorder._values");
        if (values == NULL) {
            return -1;
        }
        reserved_keys = PyObject_GetAttrString(values, "RESERVED_KEYS");
        Py_DECREF(values);
        if (reserved_keys != NULL && !PyAnySet_Check(reserved_keys)) {
            Py_CLEAR(reserved_keys);
            PyErr_SetString(PyExc_TypeError, "rigorous_recorder._values.RESERVED_KEYS is not a set");
        }
    }
    return reserved_keys == NULL ? -1 : 0;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},  /* the borrowed references each call holds need the GIL */
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "rigorous_recorder._speedups",
    .m_doc = "Compiled hot-path loops of rigorous_recorder (see _hotpath.py).",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
