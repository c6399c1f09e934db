/*
 * redline.load._lane: the fast lane's per-response work in C (see _flow.LaneConnection).
 *
 * A looping user of a plain flow spends most of its generator CPU in three Python frames
 * per request: the protocol's data_received, httptools' message-complete callback and the
 * lane's bookkeeping. LaneCore.data_received does the common case without any of them: when
 * one read holds exactly one complete, well-formed HTTP/1.1 response with nothing unusual
 * about it (a Content-Length or chunked body, no Set-Cookie, not closing, a status of 200 to
 * 499 that the step accepts), it records the service time into the recorder's sink and
 * writes the next request, all before returning to the event loop.
 *
 * Everything else (a response split over reads, 1xx, 5xx, cookies, Connection: close,
 * trailers, chunk extensions, bytes the strict parser below does not know) goes, whole and
 * untouched, to the Python lane (LaneConnection.data_received via _py_data_received), which
 * parses it with httptools and handles it as it always does: the C lane only ever answers
 * where the Python lane's answer is certain, so both record the same thing.
 *
 * The attributes the Python code shares with this one (_waiter, _transport, _raw, _sent_ns,
 * _first_byte_ns, _headers_done) are members of this type, so that both see one state. The
 * flow's position (run.position, run.pending, run.until) is read once and then kept here
 * while only this code moves it: the fallback, a send from the general path (_forget) and
 * the end of a user all make the next response read it again. The recorder's interval
 * window comes from its _window array, read in place.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    /* Shared with the Python Connection code (see the member table). */
    PyObject *waiter;
    PyObject *transport;
    PyObject *raw;
    long long sent_ns;
    long long first_byte_ns;
    char headers_done;
    /* Set by _bind_core. */
    PyObject *run;
    PyObject *recorder;
    PyObject *cookies;
    PyObject *steps;      /* tuple of (step, data, ok, append, name) */
    Py_ssize_t count;
    long long until_ns;
    int bound;
    /* recorder._window: [low_ns, high_ns) of the recorder's current interval. */
    Py_buffer window;
    int has_window;
    /* What this lane last wrote to run.position and run.pending, while nothing else has
       touched them (0: unknown, read them again). */
    long position;
    PyObject *pending;    /* borrowed from steps */
    PyObject *until;      /* run.until, read with run.position */
    PyObject *vu;
    /* transport.write, looked up again when the transport changes. */
    PyObject *write_owner;
    PyObject *write;
} LaneCore;

static PyObject *s_position, *s_pending, *s_until, *s_stop, *s_retired, *s_advance, *s_vu,
    *s_iteration, *s_window, *s_write, *s_fallback, *one;

static inline long long
now_ns(void)
{
    /* time.perf_counter_ns() on Linux: CLOCK_MONOTONIC. Other systems' perf_counter may use
       another clock, so the module refuses to load there (see module_exec). */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* -- a strict HTTP/1.1 response framer ----------------------------------------------------
 *
 * frame_response() returns the status code when buf[0:n] is exactly one complete response
 * that the fast path may take, else -1. Strict on purpose: whatever it does not accept is
 * left to httptools (llhttp), so it never takes a response llhttp would refuse.
 */

static const char TOKEN[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

/* Eight bytes at a time: is any byte below 0x20 (a control, or tab) or above 0x7e (DEL,
   obs-text)? The classic SWAR tests "has less than" and "has more than" (bit twiddling
   hacks); a word that fails is looked at byte by byte, since a tab is allowed. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static inline int
word_is_plain_text(uint64_t x)
{
    uint64_t below = (x - ONES * 0x20) & ~x & HIGHS;
    uint64_t above = ((x + ONES * (127 - 0x7e)) | x) & HIGHS;
    return (below | above) == 0;
}

/* The line from p up to its CR LF, whose bytes must all be visible ASCII, space or tab
   (obs-text and controls are left to httptools): the end of the line, or NULL. */
static inline const char *
text_line(const char *p, const char *end)
{
    const char *cr = memchr(p, '\r', (size_t)(end - p));
    const unsigned char *q = (const unsigned char *)p, *stop;
    if (cr == NULL || end - cr < 2 || cr[1] != '\n')
        return NULL;
    stop = (const unsigned char *)cr;
    for (; stop - q >= 8; q += 8) {
        uint64_t word;
        memcpy(&word, q, 8);
        if (!word_is_plain_text(word))
            break;
    }
    for (; q < stop; q++)
        if ((*q < 0x20 && *q != '\t') || *q > 0x7e)
            return NULL;
    return cr;
}

static inline int
lower_equals(const char *text, const char *lower, size_t length)
{
    size_t i;
    for (i = 0; i < length; i++)
        if ((text[i] | 0x20) != lower[i])
            return 0;
    return 1;
}

static inline int
hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int
frame_response(const char *buf, size_t n)
{
    const char *p = buf, *end = buf + n, *eol;
    int status;
    long long length = -1;
    int chunked = 0;

    if (n < 17 || memcmp(p, "HTTP/1.1 ", 9) != 0)
        return -1;
    if (p[9] < '1' || p[9] > '9' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9'
        || p[12] != ' ')
        return -1;
    status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    /* 1xx, 204 and 304 have no body whatever the head says: the general parser decides. */
    if (status < 200 || status == 204 || status == 304)
        return -1;
    if ((eol = text_line(p + 13, end)) == NULL)
        return -1;
    p = eol + 2;

    /* Header fields, up to the empty line. */
    for (;;) {
        const char *name = p, *value, *value_end;
        size_t name_length;
        if (end - p < 2)
            return -1;
        if (p[0] == '\r') {
            if (p[1] != '\n')
                return -1;
            p += 2;
            break;
        }
        while (p < end && TOKEN[(unsigned char)*p])
            p++;
        if (p == name || p >= end || *p != ':')
            return -1;
        name_length = (size_t)(p - name);
        if ((eol = text_line(p + 1, end)) == NULL)
            return -1;
        value = p + 1;
        value_end = eol;
        while (value < value_end && (*value == ' ' || *value == '\t'))
            value++;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t'))
            value_end--;
        p = eol + 2;

        switch (name_length) {
        case 14:
            if (lower_equals(name, "content-length", 14)) {
                const char *d;
                if (length >= 0 || value == value_end || value_end - value > 15)
                    return -1;
                length = 0;
                for (d = value; d < value_end; d++) {
                    if (*d < '0' || *d > '9')
                        return -1;
                    length = length * 10 + (*d - '0');
                }
            }
            break;
        case 17:
            if (lower_equals(name, "transfer-encoding", 17)) {
                if (chunked || value_end - value != 7 || !lower_equals(value, "chunked", 7))
                    return -1;
                chunked = 1;
            }
            break;
        case 10:
            if (lower_equals(name, "connection", 10)
                && (value_end - value != 10 || !lower_equals(value, "keep-alive", 10)))
                return -1;
            break;
        case 16:
            if (lower_equals(name, "proxy-connection", 16))
                return -1;
            break;
        case 7:
            if (lower_equals(name, "upgrade", 7))
                return -1;
            break;
        }
    }

    if (chunked) {
        if (length >= 0)
            return -1;
        for (;;) {
            long long size = 0;
            int digits = 0, h;
            while (p < end && (h = hex_value(*p)) >= 0) {
                if (++digits > 15)
                    return -1;
                size = size * 16 + h;
                p++;
            }
            /* No chunk extensions, no trailers: those go to httptools. */
            if (digits == 0 || end - p < 2 || p[0] != '\r' || p[1] != '\n')
                return -1;
            p += 2;
            if (size == 0) {
                if (end - p != 2 || p[0] != '\r' || p[1] != '\n')
                    return -1;
                return status;
            }
            if (end - p < size + 2)
                return -1;
            p += size;
            if (p[0] != '\r' || p[1] != '\n')
                return -1;
            p += 2;
        }
    }
    /* Without a length the body runs to the close: not a keep-alive answer. */
    if (length < 0 || end - p != length)
        return -1;
    return status;
}

/* "ookie" anywhere in the read, as the Python lane looks for Set-Cookie / set-cookie. */
static int
has_ookie(const char *p, size_t n)
{
    const char *q = p, *end = p + n;
    while (q < end && (q = memchr(q, 'k', (size_t)(end - q))) != NULL) {
        if (q - p >= 2 && end - q >= 3 && q[-2] == 'o' && q[-1] == 'o' && q[1] == 'i'
            && q[2] == 'e')
            return 1;
        q++;
    }
    return 0;
}

/* -- the type ------------------------------------------------------------------------------ */

static PyObject *
fallback(LaneCore *self, PyObject *data)
{
    /* Python code may move run.position and run.pending from here on: read them again. */
    self->position = 0;
    return PyObject_CallMethodOneArg((PyObject *)self, s_fallback, data);
}

static int
attr_true(PyObject *obj, PyObject *name)
{
    int truth;
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

static PyObject *
record_sample(LaneCore *self, PyObject *entry, long long done, int status)
{
    /* recorder.sink(name).append(done - sent) inside the current interval, else record(). */
    const long long *window = (const long long *)self->window.buf;
    if (window[0] <= done && done < window[1]) {
        PyObject *sample = PyLong_FromLongLong(done - self->sent_ns);
        PyObject *result;
        if (sample == NULL)
            return NULL;
        result = PyObject_CallOneArg(PyTuple_GET_ITEM(entry, 3), sample);
        Py_DECREF(sample);
        return result;
    }
    return PyObject_CallMethod(
        self->recorder, "record", "OOLLiO", PyTuple_GET_ITEM(entry, 4), Py_None, self->sent_ns,
        done, status, Py_None);
}

static int
end_of_iteration(LaneCore *self, long long done)
{
    /* 1: the user stops here; 0: it goes on (its iteration counted); -1: error. */
    PyObject *iteration, *next;
    int stop;
    if (self->until == Py_None || done >= self->until_ns)
        stop = 1;
    else if ((stop = attr_true(self->until, s_stop)) == 0)
        stop = attr_true(self->run, s_retired);
    if (stop != 0)
        return stop;
    iteration = PyObject_GetAttr(self->vu, s_iteration);
    if (iteration == NULL)
        return -1;
    next = PyNumber_Add(iteration, one);
    Py_DECREF(iteration);
    if (next == NULL)
        return -1;
    stop = PyObject_SetAttr(self->vu, s_iteration, next);
    Py_DECREF(next);
    return stop;
}

static PyObject *
LaneCore_data_received(LaneCore *self, PyObject *data)
{
    PyObject *run, *entry, *ok, *result, *step, *value;
    const char *bytes;
    Py_ssize_t size;
    long position;
    long long done;
    int status, stop;

    if (!self->bound || self->first_byte_ns != 0 || self->waiter == NULL || self->waiter == Py_None
        || self->transport == NULL || self->transport == Py_None || !PyBytes_CheckExact(data))
        return fallback(self, data);
    bytes = PyBytes_AS_STRING(data);
    size = PyBytes_GET_SIZE(data);
    status = frame_response(bytes, (size_t)size);
    if (status < 0 || status >= 500 || PyDict_GET_SIZE(self->cookies) != 0
        || has_ookie(bytes, (size_t)size))
        return fallback(self, data);

    run = self->run;
    position = self->position;
    if (position == 0) {
        value = PyObject_GetAttr(run, s_position);
        if (value == NULL)
            return NULL;
        position = PyLong_AsLong(value);
        Py_DECREF(value);
        if (position == -1 && PyErr_Occurred())
            return NULL;
        if (position < 1 || position > self->count)
            return fallback(self, data);
        value = PyObject_GetAttr(run, s_until);
        if (value == NULL)
            return NULL;
        Py_XSETREF(self->until, value);
        self->pending = NULL;
    }
    entry = PyTuple_GET_ITEM(self->steps, position - 1);
    ok = PyTuple_GET_ITEM(entry, 2);
    if (ok != Py_None) {
        int accepted;
        PyObject *code = PyLong_FromLong(status);
        if (code == NULL)
            return NULL;
        accepted = PySequence_Contains(ok, code);
        Py_DECREF(code);
        if (accepted < 0)
            return NULL;
        if (!accepted)
            return fallback(self, data);
    }

    done = now_ns();
    Py_INCREF(data);
    Py_XSETREF(self->raw, data);
    result = record_sample(self, entry, done, status);
    if (result == NULL)
        return NULL;
    Py_DECREF(result);

    if (position == self->count) {
        stop = end_of_iteration(self, done);
        if (stop < 0)
            return NULL;
        if (stop) {
            /* The user stops: the general path ends the iteration. */
            self->position = 0;
            Py_INCREF(Py_None);
            Py_XSETREF(self->waiter, Py_None);
            if (PyObject_SetAttr(run, s_pending, Py_None) < 0)
                return NULL;
            return PyObject_CallMethodNoArgs(run, s_advance);
        }
        position = 0;
    }
    /* run.position and run.pending, written only when they change (never, in a flow of one
       request): while self->position is set, nothing else has written them. */
    if (position + 1 != self->position) {
        value = PyLong_FromLong(position + 1);
        if (value == NULL)
            return NULL;
        stop = PyObject_SetAttr(run, s_position, value);
        Py_DECREF(value);
        if (stop < 0)
            return NULL;
    }
    self->position = 0;
    entry = PyTuple_GET_ITEM(self->steps, position);
    step = PyTuple_GET_ITEM(entry, 0);
    if (step != self->pending) {
        if (PyObject_SetAttr(run, s_pending, step) < 0)
            return NULL;
        self->pending = step;
    }
    self->position = position + 1;
    self->headers_done = 0;
    self->first_byte_ns = 0;
    if (self->write_owner != self->transport) {
        PyObject *write = PyObject_GetAttr(self->transport, s_write);
        if (write == NULL)
            return NULL;
        Py_INCREF(self->transport);
        Py_XSETREF(self->write_owner, self->transport);
        Py_XSETREF(self->write, write);
    }
    self->sent_ns = now_ns();
    return PyObject_CallOneArg(self->write, PyTuple_GET_ITEM(entry, 1));
}

static PyObject *
LaneCore_bind_core(LaneCore *self, PyObject *args)
{
    PyObject *run, *recorder, *cookies, *steps, *window, *vu;
    long long until_ns;
    Py_ssize_t i;
    Py_buffer view;

    if (!PyArg_ParseTuple(args, "OOO!O!L:_bind_core", &run, &recorder, &PyDict_Type, &cookies,
                          &PyTuple_Type, &steps, &until_ns))
        return NULL;
    if (PyTuple_GET_SIZE(steps) == 0) {
        PyErr_SetString(PyExc_ValueError, "_bind_core: a lane needs at least one step");
        return NULL;
    }
    for (i = 0; i < PyTuple_GET_SIZE(steps); i++) {
        PyObject *entry = PyTuple_GET_ITEM(steps, i);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 5
            || !PyBytes_Check(PyTuple_GET_ITEM(entry, 1))) {
            PyErr_Format(PyExc_TypeError,
                         "_bind_core: step %zd must be (step, data: bytes, ok, append, name)", i);
            return NULL;
        }
    }
    window = PyObject_GetAttr(recorder, s_window);
    if (window == NULL)
        return NULL;
    i = PyObject_GetBuffer(window, &view, PyBUF_FORMAT);
    Py_DECREF(window);
    if (i < 0)
        return NULL;
    if (view.len != 2 * (Py_ssize_t)sizeof(long long) || view.format == NULL
        || strcmp(view.format, "q") != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "_bind_core: recorder._window must be array('q') of 2");
        return NULL;
    }
    vu = PyObject_GetAttr(run, s_vu);
    if (vu == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (self->has_window)
        PyBuffer_Release(&self->window);
    self->window = view;
    self->has_window = 1;
    Py_XSETREF(self->vu, vu);
    Py_INCREF(run);
    Py_XSETREF(self->run, run);
    Py_INCREF(recorder);
    Py_XSETREF(self->recorder, recorder);
    Py_INCREF(cookies);
    Py_XSETREF(self->cookies, cookies);
    Py_INCREF(steps);
    Py_XSETREF(self->steps, steps);
    self->count = PyTuple_GET_SIZE(steps);
    self->until_ns = until_ns;
    self->position = 0;
    self->pending = NULL;
    self->bound = 1;
    Py_RETURN_NONE;
}

static PyObject *
LaneCore_forget(LaneCore *self, PyObject *Py_UNUSED(ignored))
{
    self->position = 0;
    self->pending = NULL;
    Py_RETURN_NONE;
}

static int
LaneCore_traverse(LaneCore *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->waiter);
    Py_VISIT(self->transport);
    Py_VISIT(self->raw);
    Py_VISIT(self->run);
    Py_VISIT(self->recorder);
    Py_VISIT(self->cookies);
    Py_VISIT(self->steps);
    Py_VISIT(self->vu);
    Py_VISIT(self->until);
    Py_VISIT(self->write_owner);
    Py_VISIT(self->write);
    if (self->has_window)
        Py_VISIT(self->window.obj);
    return 0;
}

static int
LaneCore_clear(LaneCore *self)
{
    self->bound = 0;
    self->position = 0;
    self->pending = NULL;
    if (self->has_window) {
        self->has_window = 0;
        PyBuffer_Release(&self->window);
    }
    Py_CLEAR(self->waiter);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->raw);
    Py_CLEAR(self->run);
    Py_CLEAR(self->recorder);
    Py_CLEAR(self->cookies);
    Py_CLEAR(self->steps);
    Py_CLEAR(self->vu);
    Py_CLEAR(self->until);
    Py_CLEAR(self->write_owner);
    Py_CLEAR(self->write);
    return 0;
}

static void
LaneCore_dealloc(LaneCore *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    LaneCore_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef LaneCore_methods[] = {
    {"data_received", (PyCFunction)LaneCore_data_received, METH_O,
     "asyncio.Protocol.data_received: the fast path, else _py_data_received(data)."},
    {"_bind_core", (PyCFunction)LaneCore_bind_core, METH_VARARGS,
     "_bind_core(run, recorder, cookies, steps, until_ns): serve run's user."},
    {"_forget", (PyCFunction)LaneCore_forget, METH_NOARGS,
     "Python code is about to move run.position or run.pending: read them again."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef LaneCore_members[] = {
    {"_waiter", T_OBJECT, offsetof(LaneCore, waiter), 0, NULL},
    {"_transport", T_OBJECT, offsetof(LaneCore, transport), 0, NULL},
    {"_raw", T_OBJECT, offsetof(LaneCore, raw), 0, NULL},
    {"_sent_ns", T_LONGLONG, offsetof(LaneCore, sent_ns), 0, NULL},
    {"_first_byte_ns", T_LONGLONG, offsetof(LaneCore, first_byte_ns), 0, NULL},
    {"_headers_done", T_BOOL, offsetof(LaneCore, headers_done), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot LaneCore_slots[] = {
    {Py_tp_doc, "The C half of a fast-lane connection; see redline.load._flow."},
    {Py_tp_dealloc, LaneCore_dealloc},
    {Py_tp_traverse, LaneCore_traverse},
    {Py_tp_clear, LaneCore_clear},
    {Py_tp_methods, LaneCore_methods},
    {Py_tp_members, LaneCore_members},
    {0, NULL},
};

static PyType_Spec LaneCore_spec = {
    .name = "redline.load._lane.LaneCore",
    .basicsize = sizeof(LaneCore),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = LaneCore_slots,
};

/* Exposed for tests: the framer's verdict on one read. */
static PyObject *
lane_frame(PyObject *module, PyObject *data)
{
    Py_buffer view;
    int status;
    (void)module;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    status = frame_response((const char *)view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromLong(status);
}

static PyObject *
lane_now_ns(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyLong_FromLongLong(now_ns());
}

static PyMethodDef module_methods[] = {
    {"now_ns", lane_now_ns, METH_NOARGS, "now_ns() -> the lane's clock: time.perf_counter_ns()."},
    {"frame", lane_frame, METH_O,
     "frame(data) -> the status of the one complete response the fast path takes, else -1."},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *module)
{
    PyObject *type;
#ifndef __linux__
    /* The lane's timestamps must be time.perf_counter_ns() values, which only Linux
       guarantees to be CLOCK_MONOTONIC: elsewhere the Python lane runs. */
    PyErr_SetString(PyExc_ImportError, "redline.load._lane runs on Linux only");
    return -1;
#endif
#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return -1;
    INTERN(s_position, "position");
    INTERN(s_pending, "pending");
    INTERN(s_until, "until");
    INTERN(s_stop, "stop");
    INTERN(s_retired, "retired");
    INTERN(s_advance, "advance");
    INTERN(s_vu, "vu");
    INTERN(s_iteration, "iteration");
    INTERN(s_window, "_window");
    INTERN(s_write, "write");
    INTERN(s_fallback, "_py_data_received");
#undef INTERN
    if (one == NULL && (one = PyLong_FromLong(1)) == NULL)
        return -1;
    type = PyType_FromModuleAndSpec(module, &LaneCore_spec, NULL);
    if (type == NULL)
        return -1;
    if (PyModule_AddObject(module, "LaneCore", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef lane_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "redline.load._lane",
    .m_doc = "The fast lane's per-response work in C; optional (see redline.load._flow).",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC
PyInit__lane(void)
{
    return PyModuleDef_Init(&lane_module);
}
