/*
 * redline.monitor._request: MetricsMiddleware's per-request work in C (see _middleware.py).
 *
 * Under a server, a pure-Python wrapper of send already adds some 8,000 instructions to the
 * 180,000 of a trivial endpoint's request, and 5-8 % to its cost. So MetricsMiddleware's base class, Middleware, has its __call__ here:
 * an HTTP request of a path seen not to be excluded and a method seen before gets a Request
 * from the middleware's Requests at once; anything else goes to the Python _dispatch (and
 * every call to the Python _serve when the middleware was made pure Python). One Request per
 * request then does all of the work:
 *
 * - it is the awaitable MetricsMiddleware.__call__ returns (__await__ returns itself; send,
 *   throw and close delegate to the app's awaitable), so no Python coroutine frame runs per
 *   request: on the first send it notes the start time, counts the request in flight and
 *   calls the app; when the app returns or raises it counts a response that never completed
 *   (499 when the client had disconnected, else 500), leaves the in-flight count and, after
 *   SIGTERM, lets the last snapshot be written (all as MetricsMiddleware._serve does);
 * - it is both the receive and the send the app is given: called without a message it is
 *   receive (the Python _receive, which notes a disconnect in the scope), called with one it
 *   is send: it notes the status, counts body bytes, and as the response's last message goes
 *   out appends the status and duration to the pending lists of the request's series, found
 *   by one dict lookup by the identity of scope["route"], or hands the request to the Python
 *   _record when the series is not known yet. It returns the server's awaitable unchanged.
 *
 * Its behaviour is the Python one's, message for message; the middleware's tests run on both.
 * A coroutine's protocol is followed where a server or asyncio can see it: sending a value
 * into an unstarted request, reusing a finished one or entering one that is executing raise
 * as a coroutine would; throw() into an unstarted request raises there; close() of a
 * suspended request closes the app's awaitable and counts the request; a suspended request
 * that is garbage collected is closed first, as a coroutine is.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>
#include <time.h>

#if PY_VERSION_HEX < 0x030B0000
#error "redline.monitor._request needs Python 3.11 or later"
#endif

#define UNSTARTED 0
#define SUSPENDED 1
#define FINISHED 2

static PyObject *s_type, *s_path, *s_method, *s_dispatch, *s_serve, *k_http, *s_status, *s_body, *s_more_body, *s_trailers,
    *s_more_trailers, *s_route, *s_get, *s_throw, *s_close, *s_disconnected, *k_start, *k_body,
    *k_pathsend, *k_trailers, *n_client_closed, *n_server_error, *empty_bytes, *missing;

static inline double
now(void)
{
    /* time.perf_counter() on Linux; only differences of two readings are used. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The exception being raised, taken (normalised, with its traceback), and given back. */
static PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

static void
give_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc == NULL)
        return;
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* After a call that failed while `pending` was being handled: the new exception, with
   `pending` as its __context__, as Python's except/finally blocks chain them. */
static void
chain_exception(PyObject *pending)
{
    PyObject *raised = take_exception();
    if (raised == NULL) {
        give_exception(pending);
        return;
    }
    if (pending != NULL && raised != pending)
        PyException_SetContext(raised, pending);
    else
        Py_XDECREF(pending);
    give_exception(raised);
}

static inline int
same_text(PyObject *a, PyObject *b)
{
    /* a is one of this module's interned strings; b is whatever the app sent. */
    if (a == b)
        return 1;
    if (!PyUnicode_Check(b) || PyUnicode_GET_LENGTH(a) != PyUnicode_GET_LENGTH(b) ||
        PyUnicode_KIND(a) != PyUnicode_KIND(b))
        return 0;
    return memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b),
                  (size_t)PyUnicode_GET_LENGTH(a) * PyUnicode_KIND(a)) == 0;
}

/* The last strings equal to the message types that were not the interned ones: a literal
   with a dot in it ("http.response.body") is not interned, so each framework's messages
   bring their own. Held, so that identity with them means equal text. */
static PyObject *seen_body, *seen_start;

/* same_text for a message's type, by identity with the last equal string seen. */
static inline int
same_kind(PyObject *text, PyObject **seen, PyObject *value)
{
    if (value == text || value == *seen)
        return 1;
    if (!same_text(text, value))
        return 0;
    if (PyUnicode_CheckExact(value))
        Py_XSETREF(*seen, Py_NewRef(value));
    return 1;
}

/* message[key] as the Python code reads it: a new reference, or NULL with KeyError. */
static PyObject *
item(PyObject *mapping, PyObject *key)
{
    if (PyDict_CheckExact(mapping)) {
        PyObject *found = PyDict_GetItemWithError(mapping, key);
        if (found == NULL && !PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, key);
        return Py_XNewRef(found);
    }
    return PyObject_GetItem(mapping, key);
}

/* mapping.get(key, fallback): a new reference, or NULL with an exception. */
static PyObject *
get(PyObject *mapping, PyObject *key, PyObject *fallback)
{
    if (PyDict_CheckExact(mapping)) {
        PyObject *found = PyDict_GetItemWithError(mapping, key);
        if (found == NULL && PyErr_Occurred())
            return NULL;
        return Py_NewRef(found != NULL ? found : fallback);
    }
    return PyObject_CallMethodObjArgs(mapping, s_get, key, fallback, NULL);
}

/* bool(mapping.get(key, False)): 1, 0, or -1 with an exception. */
static int
flag(PyObject *mapping, PyObject *key)
{
    PyObject *value = get(mapping, key, Py_False);
    int truth;
    if (value == NULL)
        return -1;
    truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* -- Flight: the count of a method's requests in flight ------------------------------------- */

/* A counter with a deque's append and pop, which the in-flight gauge reads by len(): a
   request's Request adds itself and leaves with one increment each, where calling a deque's
   bound methods costs two C calls (the Python twin calls them as it would a deque's). */
typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
} Flight;

static PyTypeObject Flight_Type;

static PyObject *
Flight_append(Flight *self, PyObject *Py_UNUSED(item))
{
    self->n++;
    Py_RETURN_NONE;
}

static PyObject *
Flight_pop(Flight *self, PyObject *Py_UNUSED(ignored))
{
    if (self->n <= 0) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty Flight");
        return NULL;
    }
    self->n--;
    Py_RETURN_NONE;
}

static Py_ssize_t
Flight_len(Flight *self)
{
    return self->n;
}

static PyObject *
Flight_repr(Flight *self)
{
    return PyUnicode_FromFormat("<Flight: %zd in flight>", self->n);
}

static PyMethodDef Flight_methods[] = {
    {"append", (PyCFunction)Flight_append, METH_O, "append(item): one more in flight."},
    {"pop", (PyCFunction)Flight_pop, METH_NOARGS, "pop(): one fewer; IndexError at 0."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Flight_sequence = {
    .sq_length = (lenfunc)Flight_len,
};

static PyTypeObject Flight_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "redline.monitor._request.Flight",
    .tp_basicsize = sizeof(Flight),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Flight(): the requests of one method in flight, counted; len() reads it.",
    .tp_new = PyType_GenericNew,
    .tp_methods = Flight_methods,
    .tp_as_sequence = &Flight_sequence,
    .tp_repr = (reprfunc)Flight_repr,
};

/* The Flight whose bound append or pop `method` is, else NULL. */
static inline Flight *
flight_of(PyObject *method)
{
    PyObject *owner;
    if (!PyCFunction_Check(method))
        return NULL;
    owner = PyCFunction_GET_SELF(method);
    return owner != NULL && Py_IS_TYPE(owner, &Flight_Type) ? (Flight *)owner : NULL;
}

/* -- Pending: a series' finished requests not yet added to the metrics --------------------- */

/* The statuses (references to the ints the app sent), durations and body sizes of a series'
   requests since the last drain, in C arrays: recording one stores three words, where lists
   took a float object and two or three appends. take() hands them over, as a status -> count
   dict and the durations and sizes as bytes of doubles, having moved them out before any
   Python code can run, so no request is counted twice by a drain in another thread or
   re-entered from a collection. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    Py_ssize_t cap;
    PyObject **statuses;
    double *durations;
    double *sizes; /* NULL when sizes are not kept */
    int keep_sizes;
} Pending;

static PyTypeObject Pending_Type;

/* The most requests a Pending holds: far beyond any batch, far below a size overflow. */
#define PENDING_MOST ((Py_ssize_t)1 << 28)

static int
pending_grow(Pending *self)
{
    Py_ssize_t cap = self->cap ? self->cap * 2 : 64;
    PyObject **statuses;
    if (cap > PENDING_MOST)
        goto nomemory;
    statuses = PyMem_Realloc(self->statuses, (size_t)cap * sizeof(PyObject *));
    if (statuses == NULL)
        goto nomemory;
    self->statuses = statuses;
    {
        double *durations = PyMem_Realloc(self->durations, (size_t)cap * sizeof(double));
        if (durations == NULL)
            goto nomemory;
        self->durations = durations;
    }
    if (self->keep_sizes) {
        double *sizes = PyMem_Realloc(self->sizes, (size_t)cap * sizeof(double));
        if (sizes == NULL)
            goto nomemory;
        self->sizes = sizes;
    }
    self->cap = cap;
    return 0;
nomemory:
    PyErr_NoMemory();
    return -1;
}

/* Keeps status (a new reference is taken), seconds and size. */
static inline int
pending_add(Pending *self, PyObject *status, double seconds, double size)
{
    Py_ssize_t i = self->n;
    if (i == self->cap && pending_grow(self) < 0)
        return -1;
    self->statuses[i] = Py_NewRef(status);
    self->durations[i] = seconds;
    if (self->keep_sizes)
        self->sizes[i] = size;
    self->n = i + 1;
    return 0;
}

/* Drops every pending request. A release may run Python code that adds to this Pending:
   entries are taken off the end, 64 at a time, before any is released. */
static void
pending_forget(Pending *self)
{
    while (self->n > 0) {
        PyObject *batch[64];
        Py_ssize_t k = self->n < 64 ? self->n : 64, i;
        self->n -= k;
        memcpy(batch, self->statuses + self->n, (size_t)k * sizeof(PyObject *));
        for (i = 0; i < k; i++)
            Py_DECREF(batch[i]);
    }
}

static PyObject *
Pending_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"sizes", "capacity", NULL};
    int sizes = 0;
    Py_ssize_t capacity = 64;
    Pending *self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|pn:Pending", names, &sizes, &capacity))
        return NULL;
    if (capacity < 1 || capacity > PENDING_MOST) {
        PyErr_Format(PyExc_ValueError, "Pending: capacity must be 1 .. %zd", PENDING_MOST);
        return NULL;
    }
    self = (Pending *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->keep_sizes = sizes;
    self->cap = capacity / 2; /* pending_grow doubles it */
    if (pending_grow(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* add(status, seconds, size): one finished request (the Python-side callers' way in). */
static PyObject *
Pending_add_method(Pending *self, PyObject *const *args, Py_ssize_t nargs)
{
    double seconds, size = 0.0;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "add() takes 3 arguments (status, seconds, size), got %zd",
                     nargs);
        return NULL;
    }
    if (!PyLong_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "add(): status must be an int, not %.100s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    seconds = PyFloat_AsDouble(args[1]);
    if (seconds == -1.0 && PyErr_Occurred())
        return NULL;
    if (self->keep_sizes) {
        size = PyFloat_AsDouble(args[2]);
        if (size == -1.0 && PyErr_Occurred())
            return NULL;
    }
    if (pending_add(self, args[0], seconds, size) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* take() -> (status -> count, durations, sizes or None): what was pending, now nothing.

   The requests are moved out of the object first (PyMem_Malloc and memcpy run no Python
   code), so that what the tally's allocations may run (a collection finalizing a request
   that records, another thread) works on an empty Pending and nothing is counted twice.
   Statuses of int subclasses are counted as plain ints: no hash of theirs runs. Should the
   hand-over fail (memory), the requests taken are dropped, as the Python twin drops them. */
static PyObject *
Pending_take(Pending *self, PyObject *Py_UNUSED(ignored))
{
    PyObject **statuses, *tally = NULL, *durations = NULL, *sizes = NULL, *result = NULL;
    double *seconds, *lengths = NULL;
    Py_ssize_t i = 0, n = self->n;
    statuses = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(PyObject *));
    seconds = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(double));
    if (self->keep_sizes)
        lengths = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(double));
    if (statuses == NULL || seconds == NULL || (self->keep_sizes && lengths == NULL)) {
        PyMem_Free(statuses);
        PyMem_Free(seconds);
        PyMem_Free(lengths);
        return PyErr_NoMemory();
    }
    memcpy(statuses, self->statuses, (size_t)n * sizeof(PyObject *));
    memcpy(seconds, self->durations, (size_t)n * sizeof(double));
    if (lengths != NULL)
        memcpy(lengths, self->sizes, (size_t)n * sizeof(double));
    self->n = 0;

    tally = PyDict_New();
    if (tally == NULL)
        goto done;
    /* Runs of one status object (the usual: every request a 200) are counted in C. */
    while (i < n) {
        PyObject *status = statuses[i], *key, *count, *before;
        Py_ssize_t j = i + 1;
        long total;
        while (j < n && statuses[j] == status)
            j++;
        key = PyLong_CheckExact(status) ? Py_NewRef(status) : PyNumber_Index(status);
        if (key == NULL)
            goto done;
        before = PyDict_GetItemWithError(tally, key);
        if (before == NULL && PyErr_Occurred()) {
            Py_DECREF(key);
            goto done;
        }
        total = (long)(j - i) + (before != NULL ? PyLong_AsLong(before) : 0);
        count = PyLong_FromLong(total);
        if (count == NULL || PyDict_SetItem(tally, key, count) < 0) {
            Py_XDECREF(count);
            Py_DECREF(key);
            goto done;
        }
        Py_DECREF(count);
        Py_DECREF(key);
        i = j;
    }
    durations = PyBytes_FromStringAndSize((const char *)seconds, n * (Py_ssize_t)sizeof(double));
    if (durations == NULL)
        goto done;
    if (lengths != NULL)
        sizes = PyBytes_FromStringAndSize((const char *)lengths, n * (Py_ssize_t)sizeof(double));
    else
        sizes = Py_NewRef(Py_None);
    if (sizes == NULL)
        goto done;
    result = PyTuple_Pack(3, tally, durations, sizes);
done:
    Py_XDECREF(tally);
    Py_XDECREF(durations);
    Py_XDECREF(sizes);
    for (i = 0; i < n; i++)
        Py_DECREF(statuses[i]);
    PyMem_Free(statuses);
    PyMem_Free(seconds);
    PyMem_Free(lengths);
    return result;
}

static PyObject *
Pending_clear_method(Pending *self, PyObject *Py_UNUSED(ignored))
{
    pending_forget(self);
    Py_RETURN_NONE;
}

static Py_ssize_t
Pending_len(Pending *self)
{
    return self->n;
}

static int
Pending_traverse(Pending *self, visitproc visit, void *arg)
{
    Py_ssize_t i;
    for (i = 0; i < self->n; i++)
        Py_VISIT(self->statuses[i]);
    return 0;
}

static int
Pending_clear(Pending *self)
{
    pending_forget(self);
    return 0;
}

static void
Pending_dealloc(Pending *self)
{
    PyObject_GC_UnTrack(self);
    pending_forget(self);
    PyMem_Free(self->statuses);
    PyMem_Free(self->durations);
    PyMem_Free(self->sizes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Pending_repr(Pending *self)
{
    return PyUnicode_FromFormat("<Pending %zd requests>", self->n);
}

static PyMethodDef Pending_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Pending_add_method, METH_FASTCALL,
     "add(status, seconds, size): one finished request."},
    {"take", (PyCFunction)Pending_take, METH_NOARGS,
     "take() -> ({status: count}, durations, sizes or None): the pending requests, as bytes "
     "of doubles for the durations and sizes; none are left."},
    {"clear", (PyCFunction)Pending_clear_method, METH_NOARGS, "clear(): forget them."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Pending_sequence = {
    .sq_length = (lenfunc)Pending_len,
};

static PyTypeObject Pending_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "redline.monitor._request.Pending",
    .tp_basicsize = sizeof(Pending),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Pending(sizes=False, capacity=64): a series' finished requests not yet added "
              "to the metrics.",
    .tp_new = Pending_new,
    .tp_methods = Pending_methods,
    .tp_as_sequence = &Pending_sequence,
    .tp_repr = (reprfunc)Pending_repr,
    .tp_traverse = (traverseproc)Pending_traverse,
    .tp_clear = (inquiry)Pending_clear,
    .tp_dealloc = (destructor)Pending_dealloc,
};

/* -- Routes: id(route) -> a series' Pending, for one request method ---------------------- */

/* What a dict of id(route) -> Pending does for the Python side (set, get, clear), with the
   lookup the C request path makes per request done on the route's address itself: no int
   made for the id, no int compared. Open addressing, linear probing, at most half full; a
   key is never 0 (no object lives at address 0). Routes are few (one per route of the app
   and method, at most 10,000 before _RouteTemplates empties them), so deletion rebuilds. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t used;
    size_t mask;
    uintptr_t *keys;
    PyObject **values;
} Routes;

static PyTypeObject Routes_Type;

static inline size_t
routes_slot(const Routes *self, uintptr_t key)
{
    uint64_t h = (uint64_t)(key >> 4) * 0x9E3779B97F4A7C15ULL;
    size_t i = (size_t)(h >> 32) & self->mask;
    while (self->keys[i] != 0 && self->keys[i] != key)
        i = (i + 1) & self->mask;
    return i;
}

/* The value for key, borrowed, or NULL (no exception) when there is none. */
static inline PyObject *
routes_find(const Routes *self, const void *address)
{
    uintptr_t key = (uintptr_t)address;
    size_t i = routes_slot(self, key);
    return self->keys[i] == key ? self->values[i] : NULL;
}

static int
routes_alloc(Routes *self, size_t capacity)
{
    uintptr_t *keys = PyMem_Calloc(capacity, sizeof(uintptr_t));
    PyObject **values = PyMem_Calloc(capacity, sizeof(PyObject *));
    if (keys == NULL || values == NULL) {
        PyMem_Free(keys);
        PyMem_Free(values);
        PyErr_NoMemory();
        return -1;
    }
    self->keys = keys;
    self->values = values;
    self->mask = capacity - 1;
    self->used = 0;
    return 0;
}

/* Moves every entry into a table of `capacity` slots, leaving out `skip` (0: none). */
static int
routes_rebuild(Routes *self, size_t capacity, uintptr_t skip)
{
    uintptr_t *keys = self->keys;
    PyObject **values = self->values;
    size_t i, old = self->mask + 1;
    PyObject *dropped = NULL;
    if (routes_alloc(self, capacity) < 0) {
        self->keys = keys;
        self->values = values;
        self->mask = old - 1;
        return -1;
    }
    for (i = 0; i < old; i++) {
        if (keys[i] == 0)
            continue;
        if (keys[i] == skip) {
            dropped = values[i];
            continue;
        }
        {
            size_t j = routes_slot(self, keys[i]);
            self->keys[j] = keys[i];
            self->values[j] = values[i];
            self->used++;
        }
    }
    PyMem_Free(keys);
    PyMem_Free(values);
    Py_XDECREF(dropped);
    return 0;
}

static int
routes_key(PyObject *key, uintptr_t *out)
{
    void *address;
    if (!PyLong_Check(key)) {
        PyErr_Format(PyExc_TypeError, "Routes: keys are id() values (ints), not %.100s",
                     Py_TYPE(key)->tp_name);
        return -1;
    }
    address = PyLong_AsVoidPtr(key);
    if (address == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "Routes: 0 is not the id() of an object");
        return -1;
    }
    *out = (uintptr_t)address;
    return 0;
}

static PyObject *
Routes_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Routes *self;
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Routes() takes no arguments");
        return NULL;
    }
    self = (Routes *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (routes_alloc(self, 8) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static Py_ssize_t
Routes_len(Routes *self)
{
    return self->used;
}

static PyObject *
Routes_subscript(Routes *self, PyObject *key)
{
    uintptr_t address;
    PyObject *found;
    if (routes_key(key, &address) < 0)
        return NULL;
    found = routes_find(self, (void *)address);
    if (found == NULL) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return Py_NewRef(found);
}

static int
Routes_ass_subscript(Routes *self, PyObject *key, PyObject *value)
{
    uintptr_t address;
    size_t i;
    if (routes_key(key, &address) < 0)
        return -1;
    i = routes_slot(self, address);
    if (value == NULL) {
        if (self->keys[i] != address) {
            PyErr_SetObject(PyExc_KeyError, key);
            return -1;
        }
        return routes_rebuild(self, self->mask + 1, address);
    }
    if (self->keys[i] == address) {
        Py_SETREF(self->values[i], Py_NewRef(value));
        return 0;
    }
    if ((size_t)(self->used + 1) * 2 > self->mask + 1) {
        if (routes_rebuild(self, (self->mask + 1) * 2, 0) < 0)
            return -1;
        i = routes_slot(self, address);
    }
    self->keys[i] = address;
    self->values[i] = Py_NewRef(value);
    self->used++;
    return 0;
}

static PyObject *
Routes_get(Routes *self, PyObject *const *args, Py_ssize_t nargs)
{
    uintptr_t address;
    PyObject *found;
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get() takes 1 or 2 arguments, got %zd", nargs);
        return NULL;
    }
    if (!PyLong_Check(args[0]))
        return Py_NewRef(nargs == 2 ? args[1] : Py_None); /* as a dict of ints answers */
    if (routes_key(args[0], &address) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError) &&
            !PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL;
        PyErr_Clear();
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    }
    found = routes_find(self, (void *)address);
    return Py_NewRef(found != NULL ? found : (nargs == 2 ? args[1] : Py_None));
}

static void
routes_empty(Routes *self)
{
    size_t i, n = self->mask + 1;
    for (i = 0; i < n; i++) {
        if (self->keys[i] != 0) {
            PyObject *value = self->values[i];
            self->keys[i] = 0;
            self->values[i] = NULL;
            Py_DECREF(value);
        }
    }
    self->used = 0;
}

static PyObject *
Routes_clear_method(Routes *self, PyObject *Py_UNUSED(ignored))
{
    routes_empty(self);
    Py_RETURN_NONE;
}

static int
Routes_traverse(Routes *self, visitproc visit, void *arg)
{
    size_t i;
    if (self->keys == NULL)
        return 0;
    for (i = 0; i <= self->mask; i++)
        if (self->keys[i] != 0)
            Py_VISIT(self->values[i]);
    return 0;
}

static int
Routes_clear(Routes *self)
{
    if (self->keys != NULL)
        routes_empty(self);
    return 0;
}

static void
Routes_dealloc(Routes *self)
{
    PyObject_GC_UnTrack(self);
    Routes_clear(self);
    PyMem_Free(self->keys);
    PyMem_Free(self->values);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Routes_repr(Routes *self)
{
    return PyUnicode_FromFormat("<Routes %zd>", self->used);
}

static PyMethodDef Routes_methods[] = {
    {"get", (PyCFunction)(void (*)(void))Routes_get, METH_FASTCALL,
     "get(id, default=None): the value for a route's id, as dict.get."},
    {"clear", (PyCFunction)Routes_clear_method, METH_NOARGS, "clear(): forget every route."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods Routes_mapping = {
    .mp_length = (lenfunc)Routes_len,
    .mp_subscript = (binaryfunc)Routes_subscript,
    .mp_ass_subscript = (objobjargproc)Routes_ass_subscript,
};

static PyTypeObject Routes_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "redline.monitor._request.Routes",
    .tp_basicsize = sizeof(Routes),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Routes(): id(route) -> value, a dict the C request path reads by address.",
    .tp_new = Routes_new,
    .tp_methods = Routes_methods,
    .tp_as_mapping = &Routes_mapping,
    .tp_repr = (reprfunc)Routes_repr,
    .tp_traverse = (traverseproc)Routes_traverse,
    .tp_clear = (inquiry)Routes_clear,
    .tp_dealloc = (destructor)Routes_dealloc,
};

/* -- Requests: one per middleware ---------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *app;
    PyObject *record;    /* MetricsMiddleware._record(scope, status, seconds, size) */
    PyObject *drain;     /* _Finished.drain() */
    PyObject *receive;   /* _receive(receive, scope): the server's message, disconnect noted */
    PyObject *awaiting;  /* _awaiting(awaitable): a coroutine awaiting anything else */
    PyObject *signalled; /* _multiprocess.SIGNALLED, a set */
    PyObject *idle;      /* _write_if_idle() */
    Py_ssize_t batch;
    int sizes;
} Requests;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Requests *owner;
    PyObject *scope;
    PyObject *receive;
    PyObject *send;
    PyObject *series; /* id(route) -> (statuses, durations, sizes) of the request's method */
    PyObject *enter;  /* the in-flight deque's append, until the request starts */
    PyObject *leave;  /* the in-flight deque's pop */
    PyObject *inner;  /* the app's awaitable, as an iterator, while the request runs */
    PyObject *status; /* what http.response.start said, until recorded */
    long state_status; /* 0 before http.response.start, -1 once recorded, else the status */
    Py_ssize_t size;
    double started;
    char state;
    char running;
    char trailers;
} Request;

static PyTypeObject Request_Type;
static PyTypeObject Requests_Type;

/* The recorded end of a request: status, seconds since it started and body bytes. */
static int
record(Request *self, PyObject *status)
{
    PyObject *seconds, *size, *result;
    seconds = PyFloat_FromDouble(now() - self->started);
    if (seconds == NULL)
        return -1;
    size = PyLong_FromSsize_t(self->size);
    if (size == NULL) {
        Py_DECREF(seconds);
        return -1;
    }
    {
        PyObject *args[4] = {self->scope, status, seconds, size};
        result = PyObject_Vectorcall(self->owner->record, args, 4, NULL);
    }
    Py_DECREF(seconds);
    Py_DECREF(size);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* The last message of the response went out: its series' Pending, else _record. */
static int
record_sent(Request *self)
{
    PyObject *status = self->status, *route, *key, *pending;
    Requests *owner = self->owner;
    int ok;
    if (status == NULL) /* recorded meanwhile (a send re-entered from this one) */
        return 0;
    self->status = NULL;
    self->state_status = -1;
    route = get(self->scope, s_route, Py_None);
    if (route == NULL)
        goto fail;
    if (Py_IS_TYPE(self->series, &Routes_Type)) {
        pending = routes_find((Routes *)self->series, route);
    }
    else {
        key = PyLong_FromVoidPtr(route);
        if (key == NULL) {
            Py_DECREF(route);
            goto fail;
        }
        pending = PyDict_GetItemWithError(self->series, key);
        Py_DECREF(key);
    }
    /* Held until the request is in: releasing the route (a fresh object from a scope that
       is not a dict) could run code that empties the table. */
    Py_XINCREF(pending);
    Py_DECREF(route);
    if (pending == NULL) {
        if (PyErr_Occurred())
            goto fail;
        ok = record(self, status);
        Py_DECREF(status);
        return ok;
    }
    if (!Py_IS_TYPE(pending, &Pending_Type)) {
        Py_DECREF(pending);
        PyErr_SetString(PyExc_SystemError, "MetricsMiddleware: a series' Pending changed");
        goto fail;
    }
    ok = pending_add((Pending *)pending, status, now() - self->started, (double)self->size);
    Py_DECREF(status);
    {
        Py_ssize_t held = ((Pending *)pending)->n;
        Py_DECREF(pending);
        if (ok < 0)
            return -1;
        if (held < owner->batch)
            return 0;
    }
    {
        PyObject *result = PyObject_CallNoArgs(owner->drain);
        if (result == NULL)
            return -1;
        Py_DECREF(result);
    }
    return 0;
fail:
    Py_DECREF(status);
    return -1;
}

/* The request left the app: out of the in-flight count, and the last snapshot if due. */
static int
leave(Request *self)
{
    Flight *flight = flight_of(self->leave);
    PyObject *result;
    if (flight != NULL && flight->n > 0)
        flight->n--;
    else {
        result = PyObject_CallNoArgs(self->leave);
        if (result == NULL)
            return -1;
        Py_DECREF(result);
    }
    if (PySet_GET_SIZE(self->owner->signalled) > 0) {
        result = PyObject_CallNoArgs(self->owner->idle);
        if (result == NULL)
            return -1;
        Py_DECREF(result);
    }
    return 0;
}

/* A response that never completed, as the app returned: 499 or 500. */
static int
record_unfinished(Request *self, int gone)
{
    Py_CLEAR(self->status);
    self->state_status = -1;
    return record(self, gone ? n_client_closed : n_server_error);
}

static int
disconnected(Request *self)
{
    PyObject *noted = get(self->scope, s_disconnected, Py_None);
    int truth;
    if (noted == NULL)
        return -1;
    truth = PyObject_IsTrue(noted);
    Py_DECREF(noted);
    return truth;
}

/* The app returned. 0, or -1 with an exception. */
static int
finish(Request *self)
{
    int failed = 0;
    self->state = FINISHED;
    Py_CLEAR(self->inner);
    if (self->state_status >= 0) {
        int gone = disconnected(self);
        failed = gone < 0 || record_unfinished(self, gone) < 0;
    }
    if (failed) {
        PyObject *pending = take_exception();
        if (leave(self) < 0)
            chain_exception(pending);
        else
            give_exception(pending);
        return -1;
    }
    return leave(self);
}

/* The app raised (the exception is set): count the request if no response completed, leave,
   and let the exception (or one raised meanwhile, chained to it) propagate. */
static void
fail(Request *self)
{
    PyObject *exc = take_exception();
    self->state = FINISHED;
    Py_CLEAR(self->inner);
    if (self->state_status >= 0) {
        /* ASGI 2.4 servers raise OSError from send() once the client has gone, and
           Starlette turns that into ClientDisconnect. */
        int gone = disconnected(self);
        if (gone == 0 && exc != NULL) {
            gone = PyErr_GivenExceptionMatches(exc, PyExc_OSError);
            if (!gone) {
                PyObject *name = PyType_GetName(Py_TYPE(exc));
                if (name == NULL)
                    gone = -1;
                else {
                    gone = PyUnicode_CompareWithASCIIString(name, "ClientDisconnect") == 0;
                    Py_DECREF(name);
                }
            }
        }
        if (gone < 0 || record_unfinished(self, gone) < 0) {
            chain_exception(exc);
            exc = take_exception();
        }
    }
    if (leave(self) < 0)
        chain_exception(exc);
    else
        give_exception(exc);
}

/* The iterator that awaiting `awaitable` drives, as `await` finds it. */
static PyObject *
awaited(Request *self, PyObject *awaitable)
{
    PyTypeObject *type = Py_TYPE(awaitable);
    if (PyCoro_CheckExact(awaitable))
        return Py_NewRef(awaitable);
    if (type->tp_as_async != NULL && type->tp_as_async->am_await != NULL) {
        PyObject *iterator = type->tp_as_async->am_await(awaitable);
        if (iterator != NULL && (!PyIter_Check(iterator) || PyCoro_CheckExact(iterator))) {
            PyErr_Format(PyExc_TypeError, "__await__() returned %s of type '%.100s'",
                         PyCoro_CheckExact(iterator) ? "a coroutine" : "non-iterator",
                         Py_TYPE(iterator)->tp_name);
            Py_CLEAR(iterator);
        }
        return iterator;
    }
    /* A generator-based coroutine, or not awaitable: Python's await decides. */
    return PyObject_CallOneArg(self->owner->awaiting, awaitable);
}

/* The request starts: as the Python coroutine's body up to its first suspension. */
static int
start(Request *self)
{
    PyObject *result, *args[3], *enter = self->enter;
    Flight *flight = flight_of(enter);
    self->enter = NULL;
    self->started = now();
    if (flight != NULL) {
        flight->n++;
        Py_DECREF(enter);
    }
    else {
        result = PyObject_CallOneArg(enter, Py_None);
        Py_DECREF(enter);
        if (result == NULL) {
            self->state = FINISHED;
            return -1;
        }
        Py_DECREF(result);
    }
    self->state = SUSPENDED;
    args[0] = self->scope;
    args[1] = (PyObject *)self;
    args[2] = (PyObject *)self;
    result = PyObject_Vectorcall(self->owner->app, args, 3, NULL);
    if (result != NULL) {
        self->inner = awaited(self, result);
        Py_DECREF(result);
    }
    if (self->inner == NULL) {
        fail(self);
        return -1;
    }
    return 0;
}

static PySendResult
Request_am_send(Request *self, PyObject *arg, PyObject **presult)
{
    PySendResult outcome;
    PyObject *result = NULL;
    *presult = NULL;
    if (self->state != SUSPENDED) {
        if (self->state == FINISHED) {
            PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
            return PYGEN_ERROR;
        }
        PyErr_SetString(PyExc_SystemError, "MetricsMiddleware: a request was not started");
        return PYGEN_ERROR;
    }
    if (self->running) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return PYGEN_ERROR;
    }
    self->running = 1;
    outcome = PyIter_Send(self->inner, arg, &result);
    self->running = 0;
    if (outcome == PYGEN_NEXT) {
        *presult = result;
        return PYGEN_NEXT;
    }
    if (outcome == PYGEN_RETURN) {
        Py_DECREF(result);
        if (finish(self) < 0)
            return PYGEN_ERROR;
        *presult = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    }
    fail(self);
    return PYGEN_ERROR;
}

static PySendResult
Request_send_any(Request *self, PyObject *arg, PyObject **presult)
{
    if (self->state == UNSTARTED) {
        *presult = NULL;
        if (arg != Py_None) {
            PyErr_SetString(PyExc_TypeError,
                            "can't send non-None value to a just-started coroutine");
            return PYGEN_ERROR;
        }
        if (self->enter == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
            return PYGEN_ERROR;
        }
        self->running = 1;
        if (start(self) < 0) {
            self->running = 0;
            return PYGEN_ERROR;
        }
        self->running = 0;
    }
    return Request_am_send(self, arg, presult);
}

static PyObject *
Request_iternext(Request *self)
{
    PyObject *result;
    PySendResult outcome = Request_send_any(self, Py_None, &result);
    if (outcome == PYGEN_NEXT)
        return result;
    if (outcome == PYGEN_RETURN)
        Py_DECREF(result); /* None: StopIteration without a value */
    return NULL;
}

static PyObject *
Request_send(Request *self, PyObject *arg)
{
    PyObject *result;
    PySendResult outcome = Request_send_any(self, arg, &result);
    if (outcome == PYGEN_NEXT)
        return result;
    if (outcome == PYGEN_RETURN) {
        Py_DECREF(result);
        PyErr_SetNone(PyExc_StopIteration);
    }
    return NULL;
}

/* throw(exc) or throw(type[, value[, traceback]]) where the request has no awaitable to
   throw into: raise it here, as a coroutine does at its start. */
static PyObject *
raise_thrown(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *typ = args[0], *val = nargs > 1 ? args[1] : Py_None;
    PyObject *tb = nargs > 2 ? args[2] : Py_None;
    if (tb != Py_None && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return NULL;
    }
    if (PyExceptionInstance_Check(typ)) {
        if (val != Py_None) {
            PyErr_SetString(PyExc_TypeError,
                            "instance exception may not have a separate value");
            return NULL;
        }
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    }
    else if (PyExceptionClass_Check(typ))
        PyErr_SetObject(typ, val);
    else {
        PyErr_Format(PyExc_TypeError,
                     "exceptions must be classes or instances deriving from BaseException, "
                     "not %s",
                     Py_TYPE(typ)->tp_name);
        return NULL;
    }
    if (tb != Py_None) {
        PyObject *exc = take_exception();
        if (exc != NULL)
            PyException_SetTraceback(exc, tb);
        give_exception(exc);
    }
    return NULL;
}

static PyObject *
Request_throw(Request *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *method, *result;
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "throw expected 1 to 3 arguments, got %zd", nargs);
        return NULL;
    }
    if (self->state != SUSPENDED) {
        /* Unstarted: the exception is raised at the start and nothing was counted. */
        self->state = FINISHED;
        Py_CLEAR(self->enter);
        Py_CLEAR(self->inner);
        return raise_thrown(args, nargs);
    }
    if (self->running) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return NULL;
    }
    method = PyObject_GetAttr(self->inner, s_throw);
    if (method == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        raise_thrown(args, nargs);
        fail(self);
        return NULL;
    }
    self->running = 1;
    result = PyObject_Vectorcall(method, args, (size_t)nargs, NULL);
    self->running = 0;
    Py_DECREF(method);
    if (result != NULL)
        return result; /* the app went on and awaits something else */
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyErr_Clear();
        if (finish(self) < 0)
            return NULL;
        PyErr_SetNone(PyExc_StopIteration);
        return NULL;
    }
    fail(self);
    return NULL;
}

/* close(): as a coroutine suspended at `await app(...)`: the app's awaitable is closed, then
   GeneratorExit (or what closing raised) goes through the request's own except/finally. */
static PyObject *
Request_close(Request *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *method, *result;
    int closed = 0;
    if (self->state != SUSPENDED) {
        self->state = FINISHED;
        Py_CLEAR(self->enter);
        Py_CLEAR(self->inner);
        Py_RETURN_NONE;
    }
    if (self->running) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return NULL;
    }
    self->running = 1;
    method = PyObject_GetAttr(self->inner, s_close);
    if (method == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            closed = 1;
        }
    }
    else {
        result = PyObject_CallNoArgs(method);
        Py_DECREF(method);
        if (result != NULL) {
            Py_DECREF(result);
            closed = 1;
        }
    }
    self->running = 0;
    if (closed)
        PyErr_SetNone(PyExc_GeneratorExit);
    fail(self);
    if (PyErr_ExceptionMatches(PyExc_GeneratorExit)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return NULL;
}

static void
Request_finalize(Request *self)
{
    PyObject *exc, *result;
    if (self->state != SUSPENDED)
        return;
    exc = take_exception();
    result = Request_close(self, NULL);
    if (result == NULL)
        PyErr_WriteUnraisable((PyObject *)self);
    else
        Py_DECREF(result);
    give_exception(exc);
}

/* What the middleware reads of a message sent: new references, or NULL where absent. */
typedef struct {
    PyObject *type, *status, *body, *more_body, *trailers, *more_trailers;
} Fields;

static inline void
fields_release(Fields *f)
{
    Py_XDECREF(f->type);
    Py_XDECREF(f->status);
    Py_XDECREF(f->body);
    Py_XDECREF(f->more_body);
    Py_XDECREF(f->trailers);
    Py_XDECREF(f->more_trailers);
}

/* The slot of f that key names, or NULL: by identity for the interned keys of literals, by
   text for others. */
static inline PyObject **
field_slot(Fields *f, PyObject *key)
{
    if (key == s_type)
        return &f->type;
    if (key == s_status)
        return &f->status;
    if (key == s_body)
        return &f->body;
    if (key == s_more_body)
        return &f->more_body;
    if (key == s_trailers)
        return &f->trailers;
    if (key == s_more_trailers)
        return &f->more_trailers;
    if (!PyUnicode_Check(key) || PyUnicode_CHECK_INTERNED(key))
        return NULL; /* an interned string is none of the above if it is not them */
    if (same_text(s_type, key))
        return &f->type;
    if (same_text(s_status, key))
        return &f->status;
    if (same_text(s_body, key))
        return &f->body;
    if (same_text(s_more_body, key))
        return &f->more_body;
    if (same_text(s_trailers, key))
        return &f->trailers;
    if (same_text(s_more_trailers, key))
        return &f->more_trailers;
    return NULL;
}

/* Reads the fields of a message: a small dict (what servers and frameworks send) in one
   pass over its entries, where a lookup per key cost about 115 instructions each; any other
   mapping by lookups. 0, or -1 with an exception (KeyError when "type" is missing). */
static int
fields_of(PyObject *message, Fields *f)
{
    memset(f, 0, sizeof *f);
    if (PyDict_CheckExact(message) && PyDict_GET_SIZE(message) <= 8) {
        Py_ssize_t pos = 0, left = PyDict_GET_SIZE(message);
        PyObject *key, *value;
        /* As many entries as the dict holds: no last call to find there are no more. */
        while (left-- > 0 && PyDict_Next(message, &pos, &key, &value)) {
            PyObject **slot = field_slot(f, key);
            if (slot != NULL && *slot == NULL)
                *slot = Py_NewRef(value);
        }
        if (f->type == NULL) {
            PyErr_SetObject(PyExc_KeyError, s_type);
            return -1;
        }
        return 0;
    }
    f->type = item(message, s_type);
    if (f->type == NULL)
        return -1;
    {
        PyObject *const keys[] = {s_status, s_body, s_more_body, s_trailers, s_more_trailers};
        PyObject **slots[] = {&f->status, &f->body, &f->more_body, &f->trailers,
                              &f->more_trailers};
        size_t i;
        for (i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            PyObject *value = get(message, keys[i], missing);
            if (value == NULL) {
                fields_release(f);
                return -1;
            }
            if (value == missing)
                Py_DECREF(value);
            else
                *slots[i] = value;
        }
    }
    return 0;
}

/* receive() and send(message): the app's channel to the server. */
static PyObject *
Request_channel(Request *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *message, *kind, *send = self->send;
    Fields fields;
    if (self->owner == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "MetricsMiddleware: this request was torn down");
        return NULL;
    }
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        PyErr_SetString(PyExc_TypeError,
                        "MetricsMiddleware's receive/send takes no keyword arguments");
        return NULL;
    }
    if (nargs == 0) {
        PyObject *call[2] = {self->receive, self->scope};
        return PyObject_Vectorcall(self->owner->receive, call, 2, NULL);
    }
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError,
                     "MetricsMiddleware's send takes one message (receive none), got %zd "
                     "arguments",
                     nargs);
        return NULL;
    }
    message = args[0];
    if (fields_of(message, &fields) < 0)
        return NULL;
    kind = fields.type;
    if (same_kind(k_body, &seen_body, kind)) {
        if (self->owner->sizes) {
            Py_ssize_t n = PyObject_Size(fields.body != NULL ? fields.body : empty_bytes);
            if (n < 0)
                goto error;
            self->size += n;
        }
        if (self->state_status > 0 && !self->trailers) {
            int more = fields.more_body != NULL ? PyObject_IsTrue(fields.more_body) : 0;
            if (more < 0 || (!more && record_sent(self) < 0))
                goto error;
        }
    }
    else if (same_kind(k_start, &seen_start, kind)) {
        PyObject *status = fields.status;
        int overflow;
        long value;
        if (status == NULL) {
            PyErr_SetObject(PyExc_KeyError, s_status);
            goto error;
        }
        if (!PyLong_Check(status)) {
            PyErr_Format(PyExc_TypeError,
                         "http.response.start's status must be an int, not %.100s",
                         Py_TYPE(status)->tp_name);
            goto error;
        }
        value = PyLong_AsLongAndOverflow(status, &overflow);
        if (value == -1 && PyErr_Occurred())
            goto error;
        Py_XSETREF(self->status, Py_NewRef(status));
        self->state_status = overflow ? (overflow > 0 ? 1 : -1) : value;
        {
            int trailers = fields.trailers != NULL ? PyObject_IsTrue(fields.trailers) : 0;
            if (trailers < 0)
                goto error;
            self->trailers = (char)trailers;
        }
    }
    else if (self->state_status > 0) {
        int last = same_text(k_pathsend, kind);
        if (!last && same_text(k_trailers, kind)) {
            int more = fields.more_trailers != NULL ? PyObject_IsTrue(fields.more_trailers) : 0;
            if (more < 0)
                goto error;
            last = !more;
        }
        if (last && self->status != NULL) { /* NULL: recorded by a send re-entered above */
            PyObject *status = self->status;
            int ok;
            self->status = NULL;
            self->state_status = -1;
            ok = record(self, status);
            Py_DECREF(status);
            if (ok < 0)
                goto error;
        }
    }
    fields_release(&fields);
    return PyObject_Vectorcall(send, args, 1, NULL);
error:
    fields_release(&fields);
    return NULL;
}

static PyObject *
Request_await(Request *self)
{
    return Py_NewRef(self);
}

static int
Request_traverse(Request *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->scope);
    Py_VISIT(self->receive);
    Py_VISIT(self->send);
    Py_VISIT(self->series);
    Py_VISIT(self->enter);
    Py_VISIT(self->leave);
    Py_VISIT(self->inner);
    Py_VISIT(self->status);
    return 0;
}

static int
Request_clear(Request *self)
{
    /* Broken up by the cyclic GC (its finalizer has run): nothing is left to drive. */
    self->state = FINISHED;
    Py_CLEAR(self->owner);
    Py_CLEAR(self->scope);
    Py_CLEAR(self->receive);
    Py_CLEAR(self->send);
    Py_CLEAR(self->series);
    Py_CLEAR(self->enter);
    Py_CLEAR(self->leave);
    Py_CLEAR(self->inner);
    Py_CLEAR(self->status);
    return 0;
}

static void
Request_dealloc(Request *self)
{
    if (self->state == SUSPENDED && self->owner != NULL) {
        if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
            return; /* resurrected */
    }
    PyObject_GC_UnTrack(self);
    Request_clear(self);
    PyObject_GC_Del(self);
}

static PyObject *
Request_repr(Request *self)
{
    static const char *states[] = {"unstarted", "suspended", "finished"};
    return PyUnicode_FromFormat("<MetricsMiddleware request %s at %p>", states[(int)self->state],
                                self);
}

static PyMethodDef Request_methods[] = {
    {"send", (PyCFunction)Request_send, METH_O,
     "send(value): as a coroutine's; the app is called on the first send(None)."},
    {"throw", (PyCFunction)(void (*)(void))Request_throw, METH_FASTCALL,
     "throw(exc): into the app's awaitable, as a coroutine's throw."},
    {"close", (PyCFunction)Request_close, METH_NOARGS,
     "close(): as a coroutine's; a started request is counted (500, or 499)."},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods Request_async = {
    .am_await = (unaryfunc)Request_await,
    .am_send = (sendfunc)Request_send_any,
};

static PyTypeObject Request_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "redline.monitor._request.Request",
    .tp_basicsize = sizeof(Request),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "One HTTP request through MetricsMiddleware: the awaitable its __call__ returns, "
              "and the receive and send the app is given.",
    .tp_vectorcall_offset = offsetof(Request, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_as_async = &Request_async,
    .tp_iternext = (iternextfunc)Request_iternext,
    .tp_methods = Request_methods,
    .tp_repr = (reprfunc)Request_repr,
    .tp_traverse = (traverseproc)Request_traverse,
    .tp_clear = (inquiry)Request_clear,
    .tp_dealloc = (destructor)Request_dealloc,
    .tp_finalize = (destructor)Request_finalize,
};

/* -- Requests -------------------------------------------------------------------------------- */

/* request(scope, receive, send, (enter, leave, series)) -> the awaitable serving it. */
static PyObject *
Requests_request(Requests *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *found;
    Request *request;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "request() takes 4 arguments, got %zd", nargs);
        return NULL;
    }
    found = args[3];
    if (!PyTuple_CheckExact(found) || PyTuple_GET_SIZE(found) != 3 ||
        !(PyDict_CheckExact(PyTuple_GET_ITEM(found, 2)) ||
          Py_IS_TYPE(PyTuple_GET_ITEM(found, 2), &Routes_Type))) {
        PyErr_SetString(PyExc_TypeError, "request(): the 4th argument must be (enter, leave, "
                                         "series), series a dict or Routes");
        return NULL;
    }
    request = PyObject_GC_New(Request, &Request_Type);
    if (request == NULL)
        return NULL;
    request->vectorcall = (vectorcallfunc)Request_channel;
    request->owner = (Requests *)Py_NewRef(self);
    request->scope = Py_NewRef(args[0]);
    request->receive = Py_NewRef(args[1]);
    request->send = Py_NewRef(args[2]);
    request->enter = Py_NewRef(PyTuple_GET_ITEM(found, 0));
    request->inner = NULL;
    request->leave = Py_NewRef(PyTuple_GET_ITEM(found, 1));
    request->series = Py_NewRef(PyTuple_GET_ITEM(found, 2));
    request->status = NULL;
    request->state_status = 0;
    request->size = 0;
    request->started = 0.0;
    request->state = UNSTARTED;
    request->running = 0;
    request->trailers = 0;
    PyObject_GC_Track(request);
    return (PyObject *)request;
}

static PyObject *
Requests_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"app", "record", "drain", "receive", "awaiting", "signalled",
                            "idle", "batch", "sizes", NULL};
    PyObject *app, *record_, *drain, *receive, *awaiting, *signalled, *idle;
    Py_ssize_t batch;
    int sizes;
    Requests *self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OOOOOO!Onp:Requests", names, &app,
                                     &record_, &drain, &receive, &awaiting, &PySet_Type,
                                     &signalled, &idle, &batch, &sizes))
        return NULL;
    self = (Requests *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->app = Py_NewRef(app);
    self->record = Py_NewRef(record_);
    self->drain = Py_NewRef(drain);
    self->receive = Py_NewRef(receive);
    self->awaiting = Py_NewRef(awaiting);
    self->signalled = Py_NewRef(signalled);
    self->idle = Py_NewRef(idle);
    self->batch = batch;
    self->sizes = sizes;
    return (PyObject *)self;
}

static int
Requests_traverse(Requests *self, visitproc visit, void *arg)
{
    Py_VISIT(self->app);
    Py_VISIT(self->record);
    Py_VISIT(self->drain);
    Py_VISIT(self->receive);
    Py_VISIT(self->awaiting);
    Py_VISIT(self->signalled);
    Py_VISIT(self->idle);
    return 0;
}

static int
Requests_clear(Requests *self)
{
    Py_CLEAR(self->app);
    Py_CLEAR(self->record);
    Py_CLEAR(self->drain);
    Py_CLEAR(self->receive);
    Py_CLEAR(self->awaiting);
    Py_CLEAR(self->signalled);
    Py_CLEAR(self->idle);
    return 0;
}

static void
Requests_dealloc(Requests *self)
{
    PyObject_GC_UnTrack(self);
    Requests_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Requests_methods[] = {
    {"request", (PyCFunction)(void (*)(void))Requests_request, METH_FASTCALL,
     "request(scope, receive, send, (enter, leave, series)) -> the request's awaitable."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Requests_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "redline.monitor._request.Requests",
    .tp_basicsize = sizeof(Requests),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Requests(*, app, record, drain, receive, awaiting, signalled, idle, batch, "
              "sizes): a MetricsMiddleware's maker of per-request objects.",
    .tp_new = Requests_new,
    .tp_methods = Requests_methods,
    .tp_traverse = (traverseproc)Requests_traverse,
    .tp_clear = (inquiry)Requests_clear,
    .tp_dealloc = (destructor)Requests_dealloc,
};

/* -- Middleware: MetricsMiddleware's base class, its __call__ ------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall; /* Middleware_vectorcall, set by Middleware_new */
    PyObject *clean;    /* _clean: paths seen not to be excluded */
    PyObject *methods;  /* _methods: request method -> (enter, leave, series) */
    PyObject *requests; /* _requests: the Requests that makes this middleware's requests */
} Middleware;

static PyObject *Middleware_call(Middleware *self, PyObject *args, PyObject *kwargs);

/* A call made by vectorcall on a class whose __call__ was assigned after enable_vectorcall()
   (Python 3.11 keeps the flag then): to that __call__, through tp_call, as without the flag. */
static PyObject *
call_through_slot(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), i;
    PyObject *tuple, *kwargs = NULL, *result = NULL;
    tuple = PyTuple_New(nargs);
    if (tuple == NULL)
        return NULL;
    for (i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        kwargs = PyDict_New();
        if (kwargs == NULL)
            goto done;
        for (i = 0; i < PyTuple_GET_SIZE(kwnames); i++)
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
                goto done;
    }
    result = Py_TYPE(self)->tp_call(self, tuple, kwargs);
done:
    Py_DECREF(tuple);
    Py_XDECREF(kwargs);
    return result;
}

/* The middleware's own __call__, whichever way it was called. */
static PyObject *
middleware_serve(Middleware *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *scope, *value, *found;
    if (kwnames == NULL && nargs == 3 && self->requests != NULL &&
        Py_IS_TYPE(self->requests, &Requests_Type) && self->clean != NULL &&
        PySet_CheckExact(self->clean) && self->methods != NULL &&
        PyDict_CheckExact(self->methods) && PyDict_CheckExact(args[0])) {
        scope = args[0];
        value = PyDict_GetItemWithError(scope, s_type);
        if (value != NULL && same_text(k_http, value)) {
            value = PyDict_GetItemWithError(scope, s_path);
            if (value != NULL && PyUnicode_CheckExact(value)) {
                int clean = PySet_Contains(self->clean, value);
                if (clean < 0)
                    return NULL;
                value = clean ? PyDict_GetItemWithError(scope, s_method) : NULL;
                found = value != NULL ? PyDict_GetItemWithError(self->methods, value) : NULL;
                if (found != NULL) {
                    PyObject *call[4] = {scope, args[1], args[2], found};
                    return Requests_request((Requests *)self->requests, call, 4);
                }
            }
        }
        if (PyErr_Occurred())
            return NULL;
    }
    {
        /* _dispatch with the C request path, _serve (all in Python) without it. */
        int compiled = self->requests != NULL && Py_IS_TYPE(self->requests, &Requests_Type);
        PyObject *name = compiled ? s_dispatch : s_serve, *method, *result;
        if (kwnames == NULL && nargs == 3) {
            PyObject *call[4] = {(PyObject *)self, args[0], args[1], args[2]};
            return PyObject_VectorcallMethod(name, call, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                             NULL);
        }
        method = PyObject_GetAttr((PyObject *)self, name);
        if (method == NULL)
            return NULL;
        result = PyObject_Vectorcall(method, args, nargsf, kwnames);
        Py_DECREF(method);
        return result;
    }
}

/* middleware(scope, receive, send): a counted HTTP request of a path and method seen before
   gets its Request here; everything else (other scopes, a new path or method) goes to the
   Python _dispatch, which does what this does and the rest, and with the pure-Python request
   path (_requests is None) every call goes to _serve. Called through vectorcall where the
   type allows it (see enable_vectorcall), else through tp_call with a tuple. */
static PyObject *
Middleware_vectorcall(Middleware *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (Py_TYPE(self)->tp_call != (ternaryfunc)Middleware_call)
        return call_through_slot((PyObject *)self, args, nargsf, kwnames);
    return middleware_serve(self, args, nargsf, kwnames);
}

static PyObject *
Middleware_call(Middleware *self, PyObject *args, PyObject *kwargs)
{
    /* Also what super().__call__() in a subclass's own __call__ reaches: serve, never the
       subclass's __call__ again. */
    if (kwargs == NULL || PyDict_GET_SIZE(kwargs) == 0)
        return middleware_serve(self, &PyTuple_GET_ITEM(args, 0),
                                (size_t)PyTuple_GET_SIZE(args), NULL);
    {
        /* Keywords: to _dispatch or _serve, which refuse or take them as Python does. */
        int compiled = self->requests != NULL && Py_IS_TYPE(self->requests, &Requests_Type);
        PyObject *method = PyObject_GetAttr((PyObject *)self, compiled ? s_dispatch : s_serve);
        PyObject *result;
        if (method == NULL)
            return NULL;
        result = PyObject_Call(method, args, kwargs);
        Py_DECREF(method);
        return result;
    }
}

static PyObject *
Middleware_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Middleware *self = (Middleware *)PyType_GenericNew(type, args, kwargs);
    if (self != NULL)
        self->vectorcall = (vectorcallfunc)Middleware_vectorcall;
    return (PyObject *)self;
}

/* MetricsMiddleware, a heap subclass, visits and releases its own type (subtype_traverse,
   subtype_dealloc): this static base only has its members to see to. */
static int
Middleware_traverse(Middleware *self, visitproc visit, void *arg)
{
    Py_VISIT(self->clean);
    Py_VISIT(self->methods);
    Py_VISIT(self->requests);
    return 0;
}

static int
Middleware_clear(Middleware *self)
{
    Py_CLEAR(self->clean);
    Py_CLEAR(self->methods);
    Py_CLEAR(self->requests);
    return 0;
}

static void
Middleware_dealloc(Middleware *self)
{
    PyObject_GC_UnTrack(self);
    Middleware_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Middleware_members[] = {
    {"_clean", T_OBJECT_EX, offsetof(Middleware, clean), 0, NULL},
    {"_methods", T_OBJECT_EX, offsetof(Middleware, methods), 0, NULL},
    {"_requests", T_OBJECT_EX, offsetof(Middleware, requests), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject Middleware_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "redline.monitor._request.Middleware",
    .tp_basicsize = sizeof(Middleware),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE |
                Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "MetricsMiddleware's base: its __call__, in C.",
    .tp_new = Middleware_new,
    .tp_vectorcall_offset = offsetof(Middleware, vectorcall),
    .tp_call = (ternaryfunc)Middleware_call,
    .tp_members = Middleware_members,
    .tp_traverse = (traverseproc)Middleware_traverse,
    .tp_clear = (inquiry)Middleware_clear,
    .tp_dealloc = (destructor)Middleware_dealloc,
};

/* enable_vectorcall(cls) -> bool: lets calls of cls's instances skip the argument tuple.

   Python 3.11 does not pass Py_TPFLAGS_HAVE_VECTORCALL on to a class defined in Python (3.12
   does, when it keeps the base's tp_call), so servers calling a MetricsMiddleware would build
   a tuple for tp_call on every request. The flag is set on cls only when cls keeps the base's
   tp_call, i.e. defines no __call__ of its own that vectorcall would bypass. */
static PyObject *
enable_vectorcall(PyObject *Py_UNUSED(module), PyObject *cls)
{
    PyTypeObject *type;
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &Middleware_Type)) {
        PyErr_SetString(PyExc_TypeError, "enable_vectorcall(): a subclass of Middleware");
        return NULL;
    }
    type = (PyTypeObject *)cls;
    if (type->tp_call != Middleware_Type.tp_call ||
        type->tp_vectorcall_offset != Middleware_Type.tp_vectorcall_offset)
        Py_RETURN_FALSE;
    type->tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL;
    Py_RETURN_TRUE;
}

static PyMethodDef module_methods[] = {
    {"enable_vectorcall", (PyCFunction)enable_vectorcall, METH_O,
     "enable_vectorcall(cls) -> bool: instances of cls are called without an argument tuple "
     "(unless cls defines its own __call__)."},
    {NULL, NULL, 0, NULL},
};

/* -- module ---------------------------------------------------------------------------------- */

static int
module_exec(PyObject *module)
{
#ifndef __linux__
    PyErr_SetString(PyExc_ImportError, "redline.monitor._request is built on Linux only");
    return -1;
#endif
#define INTERN(var, text) \
    if (var == NULL && (var = PyUnicode_InternFromString(text)) == NULL) \
        return -1;
    INTERN(s_type, "type");
    INTERN(s_path, "path");
    INTERN(s_method, "method");
    INTERN(s_dispatch, "_dispatch");
    INTERN(s_serve, "_serve");
    INTERN(k_http, "http");
    INTERN(s_status, "status");
    INTERN(s_body, "body");
    INTERN(s_more_body, "more_body");
    INTERN(s_trailers, "trailers");
    INTERN(s_more_trailers, "more_trailers");
    INTERN(s_route, "route");
    INTERN(s_get, "get");
    INTERN(s_throw, "throw");
    INTERN(s_close, "close");
    INTERN(s_disconnected, "redline.monitor.disconnected");
    INTERN(k_start, "http.response.start");
    INTERN(k_body, "http.response.body");
    INTERN(k_pathsend, "http.response.pathsend");
    INTERN(k_trailers, "http.response.trailers");
#undef INTERN
    if (n_client_closed == NULL && (n_client_closed = PyLong_FromLong(499)) == NULL)
        return -1;
    if (n_server_error == NULL && (n_server_error = PyLong_FromLong(500)) == NULL)
        return -1;
    if (empty_bytes == NULL && (empty_bytes = PyBytes_FromStringAndSize("", 0)) == NULL)
        return -1;
    if (missing == NULL && (missing = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type)) == NULL)
        return -1;
    if (PyType_Ready(&Flight_Type) < 0 || PyType_Ready(&Pending_Type) < 0 ||
        PyType_Ready(&Routes_Type) < 0 ||
        PyType_Ready(&Request_Type) < 0 ||
        PyType_Ready(&Requests_Type) < 0 ||
        PyType_Ready(&Middleware_Type) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "Request", (PyObject *)&Request_Type) < 0 ||
        PyModule_AddObjectRef(module, "Requests", (PyObject *)&Requests_Type) < 0 ||
        PyModule_AddObjectRef(module, "Middleware", (PyObject *)&Middleware_Type) < 0 ||
        PyModule_AddObjectRef(module, "Flight", (PyObject *)&Flight_Type) < 0 ||
        PyModule_AddObjectRef(module, "Pending", (PyObject *)&Pending_Type) < 0 ||
        PyModule_AddObjectRef(module, "Routes", (PyObject *)&Routes_Type) < 0 ||
        PyModule_AddObjectRef(module, "DISCONNECTED", s_disconnected) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
    /* Module-wide state (interned keys, the types, the message types seen) is shared. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef request_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "redline.monitor._request",
    .m_doc = "MetricsMiddleware's per-request work in C; optional (see "
             "redline.monitor._middleware).",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC
PyInit__request(void)
{
    return PyModuleDef_Init(&request_module);
}
