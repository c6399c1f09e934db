/* redline.monitor._tally: a histogram flush's counting, in C, without sorting.
 *
 * Optional, like the other extensions (see hatch_build.py): redline.monitor._histogram does
 * the same work in Python (sort, then bisect), and the tests check that the two agree on
 * every count. Written by hand because it is a few loops over a buffer of doubles that must
 * give exactly the Python path's indices, sums and bucket counts; no library does that for
 * redline's counts layout, and the Python path's sort cost 400 instructions a value, half
 * of what MetricsMiddleware spent per request.
 *
 * tally(values, shifts, bases, scale, highest, bounds, edge) -> None, or
 *     (counts, first, n, total, lowest, highest, le)
 *
 * - values: a buffer of doubles (the histogram's pending array('d')), in the order recorded;
 * - shifts, bases: buffers of 65 int64 (redline._hdr._index_tables): the counts index of the
 *   integer u of bit length L is bases[L] + (u >> shifts[L]), hdrh's record_value index;
 * - scale, highest: a value v counts as the largest integer u <= highest with u / scale <= v
 *   (redline._hdr._unit: v * scale truncated, corrected by one where the product rounded),
 *   0 for v <= 0; the index of u is then the number of index edges at or below v, which the
 *   Python path finds by bisection;
 * - bounds: a buffer of doubles, ascending: the finite bucket bounds (``le``);
 * - edge: what an infinity counts as (+-edge); NaN values are dropped.
 *
 * counts: bytes of uint64 counts for the indices first .. first + len - 1; n: the values
 * counted; total: their sum, in the order recorded, as this Python's sum() adds them
 * (compensated from 3.12 on); lowest and
 * highest: the smallest and largest value counted; le: a tuple, per bound, of the values at
 * or below it. None when every value was NaN (or there were none).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

/* A C-contiguous buffer of 8-byte items of one of `formats` (and `count` of them, if > 0). */
static int
buffer_of(PyObject *object, Py_buffer *view, const char *what, const char *formats,
          Py_ssize_t count, const char *expected)
{
    if (PyObject_GetBuffer(object, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->itemsize != 8 || view->format == NULL || strlen(view->format) != 1 ||
        strchr(formats, view->format[0]) == NULL || (count > 0 && view->len != count * 8)) {
        PyErr_Format(PyExc_TypeError, "tally(): %s must be %s", what, expected);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int
doubles(PyObject *object, Py_buffer *view, const char *what)
{
    return buffer_of(object, view, what, "d", 0, "a buffer of doubles (format 'd')");
}

static int
int64s(PyObject *object, Py_buffer *view, const char *what)
{
    return buffer_of(object, view, what, "ql", 65, "65 int64 (array('q'))");
}

/* redline._hdr._unit: the largest integer u in 0 .. highest with u / scale <= v. */
static inline uint64_t
unit_of(double v, double scale, uint64_t highest)
{
    double product;
    uint64_t u;
    if (!(v > 0))
        return 0;
    product = v * scale;
    u = product >= (double)highest ? highest : (uint64_t)product;
    if (u < highest && (double)(u + 1) / scale <= v)
        u++;
    else if (u && (double)u / scale > v)
        u--;
    return u;
}

static inline Py_ssize_t
index_of(uint64_t u, const int64_t *shifts, const int64_t *bases)
{
    int bits = u ? 64 - __builtin_clzll(u) : 0;
    return (Py_ssize_t)(bases[bits] + (int64_t)(u >> shifts[bits]));
}

/* The number of items of a[0 .. n) that are < x (a ascending): bisect_left. Branch-free
   halving (the compiler makes the step a conditional move), as values land anywhere. */
static inline Py_ssize_t
left(const double *a, Py_ssize_t n, double x)
{
    const double *base = a;
    if (n == 0)
        return 0;
    while (n > 1) {
        Py_ssize_t half = n / 2;
        base = base[half] < x ? base + half : base;
        n -= half;
    }
    return (base - a) + (*base < x);
}

static inline double
cleaned(double v, double edge)
{
    return isinf(v) ? copysign(edge, v) : v;
}

static PyObject *
tally(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer vview, sview, bsview, bview;
    PyObject *result = NULL, *counts = NULL, *le = NULL;
    Py_ssize_t n, nb, i, counted = 0, first, last, *below = NULL;
    const double *values, *bounds;
    const int64_t *shifts, *bases;
    double scale, edge, total = 0.0, lowest = 0.0, highest = 0.0;
#if PY_VERSION_HEX >= 0x030C0000
    double compensation = 0.0;
#endif
    unsigned long long top;
    uint64_t *out;

    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "tally() takes 7 arguments, got %zd", nargs);
        return NULL;
    }
    scale = PyFloat_AsDouble(args[3]);
    if (scale == -1.0 && PyErr_Occurred())
        return NULL;
    top = PyLong_AsUnsignedLongLong(args[4]);
    if (top == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    edge = PyFloat_AsDouble(args[6]);
    if (edge == -1.0 && PyErr_Occurred())
        return NULL;
    if (!(scale > 0) || top < 1 || top >= (1ULL << 53)) {
        PyErr_SetString(PyExc_ValueError, "tally(): need scale > 0 and 1 <= highest < 2**53");
        return NULL;
    }
    if (doubles(args[0], &vview, "values") < 0)
        return NULL;
    if (int64s(args[1], &sview, "shifts") < 0) {
        PyBuffer_Release(&vview);
        return NULL;
    }
    if (int64s(args[2], &bsview, "bases") < 0) {
        PyBuffer_Release(&vview);
        PyBuffer_Release(&sview);
        return NULL;
    }
    if (doubles(args[5], &bview, "bounds") < 0) {
        PyBuffer_Release(&vview);
        PyBuffer_Release(&sview);
        PyBuffer_Release(&bsview);
        return NULL;
    }
    values = vview.buf;
    shifts = sview.buf;
    bases = bsview.buf;
    bounds = bview.buf;
    n = vview.len / (Py_ssize_t)sizeof(double);
    nb = bview.len / (Py_ssize_t)sizeof(double);

    /* Pass 1: the sum, the count and the extremes of the values kept. The sum is added as
       this Python's sum() adds floats: plainly before 3.12, with Neumaier's compensation
       from 3.12 on (bltinmodule.c), so that the Python flush and this one agree exactly. */
    for (i = 0; i < n; i++) {
        double v = values[i];
        if (isnan(v))
            continue;
        v = cleaned(v, edge);
#if PY_VERSION_HEX >= 0x030C0000
        {
            double t = total + v;
            if (fabs(total) >= fabs(v))
                compensation += (total - t) + v;
            else
                compensation += (v - t) + total;
            total = t;
        }
#else
        total += v;
#endif
        if (counted == 0 || v < lowest)
            lowest = v;
        if (counted == 0 || v > highest)
            highest = v;
        counted++;
    }
    if (counted == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (compensation != 0.0 && isfinite(compensation))
        total += compensation;
#endif
    /* Pass 2: counts over the indices the extremes span, and the buckets. An index grows
       with the value, so every value's index lies between those of the extremes. */
    first = index_of(unit_of(lowest, scale, top), shifts, bases);
    last = index_of(unit_of(highest, scale, top), shifts, bases);
    counts = PyBytes_FromStringAndSize(NULL, (last - first + 1) * (Py_ssize_t)sizeof(uint64_t));
    below = PyMem_Calloc((size_t)nb + 1, sizeof(Py_ssize_t));
    if (counts == NULL || below == NULL) {
        if (below == NULL)
            PyErr_NoMemory();
        goto done;
    }
    out = (uint64_t *)PyBytes_AS_STRING(counts);
    memset(out, 0, (size_t)(last - first + 1) * sizeof(uint64_t));
    for (i = 0; i < n; i++) {
        double v = values[i];
        if (isnan(v))
            continue;
        v = cleaned(v, edge);
        out[index_of(unit_of(v, scale, top), shifts, bases) - first]++;
        below[left(bounds, nb, v)]++; /* the first bound at or above v, nb if none */
    }
    le = PyTuple_New(nb);
    if (le == NULL)
        goto done;
    {
        Py_ssize_t running = 0;
        for (i = 0; i < nb; i++) {
            PyObject *count;
            running += below[i];
            count = PyLong_FromSsize_t(running);
            if (count == NULL)
                goto done;
            PyTuple_SET_ITEM(le, i, count);
        }
    }
    result = Py_BuildValue("(OnndddO)", counts, first, counted, total, lowest, highest, le);
done:
    Py_XDECREF(counts);
    Py_XDECREF(le);
    PyMem_Free(below);
    PyBuffer_Release(&vview);
    PyBuffer_Release(&sview);
    PyBuffer_Release(&bsview);
    PyBuffer_Release(&bview);
    return result;
}

static PyMethodDef tally_methods[] = {
    {"tally", (PyCFunction)(void (*)(void))tally, METH_FASTCALL,
     "tally(values, shifts, bases, scale, highest, bounds, edge) -> None or (counts, first, "
     "n, total, lowest, highest, le): a histogram flush's HDR counts, sum and bucket "
     "counts."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot tally_slots[] = {
    {0, NULL},
};

static struct PyModuleDef tally_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "redline.monitor._tally",
    .m_doc = "A histogram flush's counting in C; optional (see redline.monitor._histogram).",
    .m_size = 0,
    .m_methods = tally_methods,
    .m_slots = tally_slots,
};

PyMODINIT_FUNC
PyInit__tally(void)
{
    return PyModuleDef_Init(&tally_module);
}
