/* edge.recognize._obb: the YOLO-OBB decode (threshold, score order, Fast-NMS over probabilistic IoU) in C.
 *
 * It makes the decisions of edge.recognize.detect's numpy path (decode_obb -> nms_rotated), step for step
 * in the same float32 arithmetic: the same operations in the same order, cos, sin and log taken
 * in double and rounded to float, and no fused multiply-adds (built with -ffp-contract=off).
 * edge.recognize.detect falls back to the numpy path where this module was not built.
 *
 * decode(pred, n, nc, conf, bound, reach, max_nms, max_det, agnostic, max_wh, out) -> count
 *   pred   float32 buffer, C-contiguous (4 + nc + 1) x n: cx, cy, w, h, nc class scores, angle
 *   out    writable float32 buffer of at least min(n, max_det) x 7 items: per kept box, best
 *          score first (ties: lower anchor first, as numpy's stable sort), its cx, cy, w, h,
 *          angle, score and class (the first best class, as argmax)
 *   bound  the float32 Bhattacharyya distance below which a pair overlaps by more than the IoU
 *          threshold (edge.recognize.detect._distance_bound)
 *   reach  the pair pre-filter: two regular boxes can overlap only if
 *          |dc|^2 < reach * (trace_i + trace_j) (edge.recognize.detect._reach; 0: no pre-filter)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EPS 1e-7f

typedef struct {
    float score;
    Py_ssize_t index;
    Py_ssize_t cls;
} Cand;

typedef struct {
    float x, y, a, b, c, det, trace;
    int regular; /* the distance pre-filter may judge it (edge.recognize.detect._regular) */
} Gauss;

static int by_score(const void *p, const void *q)
{
    const Cand *u = (const Cand *)p, *v = (const Cand *)q;
    if (u->score > v->score) return -1;
    if (u->score < v->score) return 1;
    return (u->index > v->index) - (u->index < v->index);
}

/* ultralytics' _get_covariance_matrix of one box, as edge.recognize.detect._gauss computes it */
static Gauss gauss(float x, float y, float w, float h, float r)
{
    Gauss g;
    float a = (w * w) / 12.0f, b = (h * h) / 12.0f;
    float cs = (float)cos((double)r), sn = (float)sin((double)r);
    float c2 = cs * cs, s2 = sn * sn;
    float det;
    g.x = x;
    g.y = y;
    g.a = a * c2 + b * s2;
    g.b = a * s2 + b * c2;
    g.c = ((a - b) * cs) * sn;
    det = g.a * g.b - g.c * g.c;
    g.det = det < 0.0f ? 0.0f : det; /* np.maximum(det, 0): NaN stays NaN */
    g.trace = g.a + g.b;
    g.regular = g.det >= 1.0f && g.trace * g.trace <= 1e4f * g.det;
    return g;
}

/* edge.recognize.detect._bhattacharyya of two boxes, clipped to [eps, 100] */
static float bhattacharyya(const Gauss *g1, const Gauss *g2)
{
    float sa = g1->a + g2->a, sb = g1->b + g2->b, sc = g1->c + g2->c;
    float det = sa * sb - sc * sc;
    float den = det + EPS;
    float dx = g1->x - g2->x, dy = g1->y - g2->y;
    float t1 = ((sa * (dy * dy) + sb * (dx * dx)) / den) * 0.25f;
    float t2 = (((sc * dx) * dy) / den) * -0.5f;
    float inner = det / (4.0f * sqrtf(g1->det * g2->det) + EPS) + EPS;
    float t3 = (float)log((double)inner) * 0.5f;
    float bd = (t1 + t2) + t3;
    if (bd < EPS) bd = EPS;
    if (bd > 100.0f) bd = 100.0f;
    return bd;
}

/* a C-contiguous buffer of `itemsize`-byte items whose struct code is one of `codes`, holding
 * exactly `items` of them (or at least, when `at_least`) */
static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *codes,
                      Py_ssize_t itemsize, Py_ssize_t items, int at_least, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    const char *code;
    if (PyObject_GetBuffer(obj, view, flags) != 0) return -1;
    code = view->format == NULL ? "B" : view->format + strspn(view->format, "<=@");
    if (view->itemsize != itemsize || strlen(code) != 1 || strchr(codes, code[0]) == NULL ||
        (at_least ? view->len / itemsize < items : view->len / itemsize != items)) {
        PyErr_Format(PyExc_ValueError, "%s: expected a C-contiguous buffer of %s%zd items ('%s')",
                     what, at_least ? "at least " : "", items, codes);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *decode(PyObject *self, PyObject *args)
{
    PyObject *pred_obj, *out_obj;
    Py_ssize_t n, nc, max_nms, max_det;
    float conf, bound, max_wh;
    double reach;
    int agnostic;
    Py_buffer pv, ov;
    Cand *cand = NULL;
    Gauss *g = NULL;
    unsigned char *suppressed = NULL;
    Py_ssize_t k = 0, kept = 0;
    (void)self;

    if (!PyArg_ParseTuple(args, "OnnffdnnpfO", &pred_obj, &n, &nc, &conf, &bound, &reach,
                          &max_nms, &max_det, &agnostic, &max_wh, &out_obj))
        return NULL;
    if (n < 0 || nc < 1 || max_nms < 0 || max_det < 0) {
        PyErr_SetString(PyExc_ValueError, "n, max_nms and max_det must be >= 0, nc >= 1");
        return NULL;
    }
    if (get_buffer(pred_obj, &pv, 0, "f", 4, (4 + nc + 1) * n, 0, "pred") != 0) return NULL;
    if (get_buffer(out_obj, &ov, 1, "f", 4, 7 * (n < max_det ? n : max_det), 1, "out") != 0) {
        PyBuffer_Release(&pv);
        return NULL;
    }
    const float *p = (const float *)pv.buf;
    float *out = (float *)ov.buf;
    const float *angle = p + (4 + nc) * n;

    Py_BEGIN_ALLOW_THREADS
    cand = (Cand *)malloc((size_t)(n > 0 ? n : 1) * sizeof(Cand));
    if (cand != NULL) {
        /* candidates: best class score above conf (a NaN among them makes the best NaN, as
         * numpy's max does, and NaN is never above conf) */
        for (Py_ssize_t i = 0; i < n; i++) {
            float best = p[4 * n + i];
            Py_ssize_t cls = 0;
            for (Py_ssize_t c = 1; c < nc && best == best; c++) {
                float s = p[(4 + c) * n + i];
                if (s > best || s != s) {
                    best = s;
                    cls = c;
                }
            }
            if (best > conf) {
                cand[k].score = best;
                cand[k].index = i;
                cand[k].cls = cls;
                k++;
            }
        }
        qsort(cand, (size_t)k, sizeof(Cand), by_score);
        if (k > max_nms) k = max_nms;
        g = (Gauss *)malloc((size_t)(k > 0 ? k : 1) * sizeof(Gauss));
        suppressed = (unsigned char *)calloc((size_t)(k > 0 ? k : 1), 1);
    }
    if (g != NULL && suppressed != NULL) {
        for (Py_ssize_t j = 0; j < k; j++) {
            Py_ssize_t i = cand[j].index;
            float x = p[i], y = p[n + i];
            if (!agnostic && nc > 1) { /* keep classes apart, as edge.recognize.detect does */
                x = x + (float)cand[j].cls * max_wh;
                y = y + (float)cand[j].cls * max_wh;
            }
            g[j] = gauss(x, y, p[2 * n + i], p[3 * n + i], angle[i]);
        }
        /* Fast-NMS: j goes when any higher-scoring box overlaps it, suppressed or not */
        for (Py_ssize_t j = 1; j < k; j++) {
            for (Py_ssize_t i = 0; i < j; i++) {
                double dx = (double)g[i].x - g[j].x, dy = (double)g[i].y - g[j].y;
                double tr = (double)g[i].trace + g[j].trace;
                /* too far apart to overlap: judged only where edge.recognize.detect._reach is safe */
                if (reach > 0.0 && g[i].regular && g[j].regular && !(dx * dx + dy * dy < reach * tr))
                    continue;
                if (bhattacharyya(&g[i], &g[j]) < bound) {
                    suppressed[j] = 1;
                    break;
                }
            }
        }
        for (Py_ssize_t j = 0; j < k && kept < max_det; j++) {
            if (suppressed[j]) continue;
            Py_ssize_t i = cand[j].index;
            float *row = out + 7 * kept++;
            row[0] = p[i];
            row[1] = p[n + i];
            row[2] = p[2 * n + i];
            row[3] = p[3 * n + i];
            row[4] = angle[i];
            row[5] = cand[j].score;
            row[6] = (float)cand[j].cls;
        }
    }
    Py_END_ALLOW_THREADS

    int failed = cand == NULL || g == NULL || suppressed == NULL;
    free(cand);
    free(g);
    free(suppressed);
    PyBuffer_Release(&pv);
    PyBuffer_Release(&ov);
    if (failed) return PyErr_NoMemory();
    return PyLong_FromSsize_t(kept);
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(pred, n, nc, conf, bound, reach, max_nms, max_det, agnostic, max_wh, out) -> count\n"
     "The boxes a YOLO-OBB output keeps, best first, written into `out` as rows of\n"
     "cx, cy, w, h, angle, score, class."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_obb", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__obb(void) { return PyModule_Create(&module); }
