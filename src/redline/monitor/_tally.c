/* redline.monitor._tally: a histogram flush's counting, in one C pass over the values.
 *
 * Optional, like the other extensions (see hatch_build.py): redline.monitor._histogram does
 * the same work in Python (sort, then bisect), and the tests check that the two agree on
 * every count. Written by hand because it is a few loops over a buffer of doubles that must
 * give exactly the Python path's indices, sums and bucket counts; no library does that for
 * redline's counts layout, and the Python path's sort cost 400 instructions a value, half
 * of what MetricsMiddleware spent per request.
 *
 * tally(values, edges, bounds, edge) -> None, or
 *     (counts, first, n, total, lowest, highest, le)
 *
 * - values: a buffer of doubles (the histogram's pending array('d')), in the order recorded;
 * - edges: a buffer of doubles, ascending: edges[k] is the lowest value of counts index k + 1
 *   (redline._hdr._edges), so a value's index is bisect_right(edges, value);
 * - bounds: a buffer of doubles, ascending: the finite bucket bounds (``le``);
 * - edge: what an infinity counts as (+-edge); NaN values are dropped.
 *
 * counts: bytes of uint64 counts for the indices first .. first + len - 1; n: the values
 * counted; total: their sum, in the order recorded, as Python's sum() adds them; lowest and
 * highest: the smallest and largest value counted; le: a tuple, per bound, of the values at
 * or below it. None when every value was NaN (or there were none).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

static int
doubles(PyObject *object, Py_buffer *view, const char *what)
{
    if (PyObject_GetBuffer(object, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->itemsize != sizeof(double) || view->format == NULL ||
        strcmp(view->format, "d") != 0) {
        PyErr_Format(PyExc_TypeError, "tally(): %s must be a buffer of doubles (format 'd')",
                     what);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* The number of items of a[0 .. n) that are <= x (a ascending): bisect_right. Branch-free
   halving (the compiler makes the step a conditional move), as values land anywhere. */
static inline Py_ssize_t
right(const double *a, Py_ssize_t n, double x)
{
    const double *base = a;
    if (n == 0)
        return 0;
    while (n > 1) {
        Py_ssize_t half = n / 2;
        base = base[half] <= x ? base + half : base;
        n -= half;
    }
    return (base - a) + (*base <= x);
}

/* The number of items of a[0 .. n) that are < x (a ascending): bisect_left. */
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
    Py_buffer vview, eview, bview;
    PyObject *result = NULL, *counts = NULL, *le = NULL;
    Py_ssize_t n, ne, nb, i, counted = 0, first, last, *below = NULL;
    const double *values, *edges, *bounds;
    double edge, total = 0.0, lowest = 0.0, highest = 0.0;
    uint64_t *out;

    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "tally() takes 4 arguments, got %zd", nargs);
        return NULL;
    }
    edge = PyFloat_AsDouble(args[3]);
    if (edge == -1.0 && PyErr_Occurred())
        return NULL;
    if (doubles(args[0], &vview, "values") < 0)
        return NULL;
    if (doubles(args[1], &eview, "edges") < 0) {
        PyBuffer_Release(&vview);
        return NULL;
    }
    if (doubles(args[2], &bview, "bounds") < 0) {
        PyBuffer_Release(&vview);
        PyBuffer_Release(&eview);
        return NULL;
    }
    values = vview.buf;
    edges = eview.buf;
    bounds = bview.buf;
    n = vview.len / (Py_ssize_t)sizeof(double);
    ne = eview.len / (Py_ssize_t)sizeof(double);
    nb = bview.len / (Py_ssize_t)sizeof(double);

    /* Pass 1: the sum, the count and the extremes of the values kept. */
    for (i = 0; i < n; i++) {
        double v = values[i];
        if (isnan(v))
            continue;
        v = cleaned(v, edge);
        total += v;
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
    /* Pass 2: counts over the indices the extremes span, and the buckets. An index grows
       with the value, so every value's index lies between those of the extremes. */
    first = right(edges, ne, lowest);
    last = right(edges, ne, highest);
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
        out[right(edges, ne, v) - first]++;
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
    PyBuffer_Release(&eview);
    PyBuffer_Release(&bview);
    return result;
}

static PyMethodDef tally_methods[] = {
    {"tally", (PyCFunction)(void (*)(void))tally, METH_FASTCALL,
     "tally(values, edges, bounds, edge) -> None or (counts, first, n, total, lowest, "
     "highest, le): a histogram flush's HDR counts, sum and bucket counts in one pass."},
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
