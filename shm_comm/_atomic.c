/*
 * shm_comm._atomic: the memory-ordering primitives the ring protocol needs, and nothing else.
 *
 * Why a compiled helper: Python has no atomics and no fences. The ring (docs/design.md)
 * publishes a message with a release store of its ring entry and of the head counter, and
 * readers validate copies with an acquire fence. On aarch64 (Jetson, Apple Silicon) plain
 * stores may become visible out of order, so these must be real atomic instructions.
 * Every operation here is sequentially consistent (the strongest order: stlr/ldar or a
 * dmb on aarch64, a locked instruction or mfence on x86-64). The cost is a few nanoseconds
 * against a Python call overhead of ~40 ns, so weaker orders would buy nothing measurable.
 *
 * The futex calls let a receiver sleep in the kernel until the head word changes (Linux).
 * Elsewhere has_futex is False and shm_comm falls back to polling.
 *
 * AtomicBuffer(buffer) holds a buffer export of a writable (or read-only, for load-only
 * observers) object such as an mmap for as long as it lives; release() drops it so the
 * mmap can be closed: at once, or, while calls are inside (another thread asleep in a wait),
 * when the last of them leaves (the in-flight rule in _atomic.h). A released buffer refuses
 * every call with SHMClosedError.
 */
#include "_atomic.h"

#if defined(__linux__)
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#define SHMC_HAVE_FUTEX 1
/* futex_waitv (Linux 5.16; the same number on every architecture), declared here for
 * older headers. */
#ifndef __NR_futex_waitv
#define __NR_futex_waitv 449
#endif
struct shmc_waitv {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};
#define SHMC_FUTEX_32 2
#else
#define SHMC_HAVE_FUTEX 0
#endif

static PyObject *closed_error_type;  /* shm_comm.errors.SHMClosedError, once looked up */

int
shmc_set_closed_error(void)
{
    if (closed_error_type == NULL) {
        PyObject *errors = PyImport_ImportModule("shm_comm.errors");
        if (errors != NULL) {
            closed_error_type = PyObject_GetAttrString(errors, "SHMClosedError");
            Py_DECREF(errors);
        }
        if (closed_error_type == NULL) {  /* (only if shm_comm.errors cannot be imported) */
            PyErr_Clear();
            Py_INCREF(PyExc_ValueError);
            closed_error_type = PyExc_ValueError;
        }
    }
    PyErr_SetString(closed_error_type,
                    "this channel end is closed: its shared memory was released (by close(), "
                    "garbage collection or interpreter exit), possibly by another thread "
                    "while this call was using it");
    return -1;
}

static int
AtomicBuffer_init(AtomicBuffer *self, PyObject *args, PyObject *kwds)
{
    PyObject *obj;
    static char *kwlist[] = {"buffer", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &obj))
        return -1;
    if (self->has_view || self->closed) {
        /* A Ring may hold pointers into the buffer we have: never swap it under them. */
        PyErr_SetString(PyExc_RuntimeError, "AtomicBuffer is already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(obj, &self->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        if (PyObject_GetBuffer(obj, &self->view, PyBUF_C_CONTIGUOUS) < 0)
            return -1;
    }
    self->has_view = 1;
    return 0;
}

static void
AtomicBuffer_dealloc(AtomicBuffer *self)
{
    /* No call can be inside (each holds a reference); a count left over from a fork()ed
     * parent's threads means nothing here. */
    if (self->has_view)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Returns the address of the aligned 8-byte word at `offset`, or NULL with an exception set. */
static volatile uint64_t *
word_at(AtomicBuffer *self, PyObject *offset_obj, int need_write)
{
    if (self->closed || !self->has_view) {
        shmc_set_closed_error();
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(offset_obj);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    if (offset < 0 || offset > self->view.len - 8) {
        PyErr_Format(PyExc_IndexError, "offset %zd outside a buffer of %zd bytes", offset,
                     self->view.len);
        return NULL;
    }
    char *p = (char *)self->view.buf + offset;
    if (((uintptr_t)p & 7u) != 0) {
        PyErr_Format(PyExc_ValueError, "offset %zd is not 8-byte aligned", offset);
        return NULL;
    }
    if (need_write && self->view.readonly) {
        PyErr_SetString(PyExc_TypeError, "buffer is read-only");
        return NULL;
    }
    return (volatile uint64_t *)p;
}

static int
as_u64(PyObject *obj, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLongMask(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static PyObject *
AtomicBuffer_load(AtomicBuffer *self, PyObject *offset)
{
    volatile uint64_t *p = word_at(self, offset, 0);
    if (p == NULL)
        return NULL;
    return PyLong_FromUnsignedLongLong(a_load(p));
}

#define CHECK_NARGS(n, name)                                                              \
    if (nargs != (n)) {                                                                   \
        PyErr_Format(PyExc_TypeError, name "() takes exactly %d arguments", (int)(n));   \
        return NULL;                                                                      \
    }

static PyObject *
AtomicBuffer_store(AtomicBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t v;
    CHECK_NARGS(2, "store");
    volatile uint64_t *p = word_at(self, args[0], 1);
    if (p == NULL || as_u64(args[1], &v) < 0)
        return NULL;
    a_store(p, v);
    Py_RETURN_NONE;
}

static PyObject *
AtomicBuffer_fetch_add(AtomicBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t v;
    CHECK_NARGS(2, "fetch_add");
    volatile uint64_t *p = word_at(self, args[0], 1);
    if (p == NULL)
        return NULL;
    /* Negative deltas wrap modulo 2**64, which is what subtraction means for a u64. */
    long long d = PyLong_AsLongLong(args[1]);
    if (d == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        if (as_u64(args[1], &v) < 0)
            return NULL;
    } else {
        v = (uint64_t)d;
    }
    return PyLong_FromUnsignedLongLong(a_fetch_add(p, v));
}

static PyObject *
AtomicBuffer_fetch_or(AtomicBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t v;
    CHECK_NARGS(2, "fetch_or");
    volatile uint64_t *p = word_at(self, args[0], 1);
    if (p == NULL || as_u64(args[1], &v) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(a_fetch_or(p, v));
}

static PyObject *
AtomicBuffer_fetch_and(AtomicBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t v;
    CHECK_NARGS(2, "fetch_and");
    volatile uint64_t *p = word_at(self, args[0], 1);
    if (p == NULL || as_u64(args[1], &v) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(a_fetch_and(p, v));
}

static PyObject *
AtomicBuffer_compare_exchange(AtomicBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t expected, desired;
    CHECK_NARGS(3, "compare_exchange");
    volatile uint64_t *p = word_at(self, args[0], 1);
    if (p == NULL || as_u64(args[1], &expected) < 0 || as_u64(args[2], &desired) < 0)
        return NULL;
    return PyBool_FromLong(a_cas(p, expected, desired));
}

/* load_many(offset, count) -> bytes: ``count`` consecutive u64 words, each loaded atomically
 * (so none is torn), as native-endian bytes. For batch reads of ring entries. */
static PyObject *
AtomicBuffer_load_many(AtomicBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_NARGS(2, "load_many");
    volatile uint64_t *p = word_at(self, args[0], 0);
    if (p == NULL)
        return NULL;
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    if (count == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t offset = (Py_ssize_t)((char *)p - (char *)self->view.buf);
    if (count < 0 || count > (self->view.len - offset) / 8) {
        PyErr_Format(PyExc_IndexError, "%zd words at offset %zd outside a buffer of %zd bytes",
                     count, offset, self->view.len);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * 8);
    if (out == NULL)
        return NULL;
    uint64_t *dst = (uint64_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < count; i++)
        dst[i] = a_load(p + i);
    return out;
}

static PyObject *
AtomicBuffer_fence(AtomicBuffer *self, PyObject *unused)
{
    a_fence();
    Py_RETURN_NONE;
}

/* wait(offset, expected, timeout) -> bool
 * Sleeps while the low 32 bits of the u64 at offset equal the low 32 bits of expected, for at
 * most timeout seconds. Returns False on timeout, True otherwise (woken, value changed, or a
 * spurious wake-up: callers re-check their condition). Releases the GIL while asleep;
 * raises SHMClosedError if the buffer is released meanwhile (release() wakes it). */
static PyObject *
AtomicBuffer_wait(AtomicBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t expected;
    CHECK_NARGS(3, "wait");
    volatile uint64_t *p = word_at(self, args[0], 0);
    if (p == NULL || as_u64(args[1], &expected) < 0)
        return NULL;
    double timeout = PyFloat_AsDouble(args[2]);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    if (shmc_enter(self) == NULL)
        return NULL;
    int rc = shmc_sleep_on(self, p, (uint32_t)expected, timeout, 0);
    shmc_leave(self);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc);
}

/* wait_past(head, cursor, waiters, bit, closed, doorbell, timeout) -> bool
 * The whole "announce, look, sleep, withdraw" of a reader in one call, so nothing runs in
 * Python between the wake-up and the return: set `bit` in the word at `waiters` (0: an
 * observer, which announces nothing), read the doorbell, then sleep on the doorbell unless
 * the word at `head` is past `cursor` or the word at `closed` is set, then clear the bit.
 * Whoever wakes readers first changes what they look at (head, or closed) and then bumps the
 * doorbell; with seq_cst on both sides, either we see that change, or the bump comes after
 * our doorbell read and the futex does not sleep (or is woken). Returns False on timeout,
 * True otherwise (callers re-check). */
static PyObject *
AtomicBuffer_wait_past(AtomicBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t cursor, bit;
    CHECK_NARGS(7, "wait_past");
    volatile uint64_t *head = word_at(self, args[0], 0);
    if (head == NULL || as_u64(args[1], &cursor) < 0 || as_u64(args[3], &bit) < 0)
        return NULL;
    volatile uint64_t *waiters = word_at(self, args[2], bit != 0);
    volatile uint64_t *closed = word_at(self, args[4], 0);
    volatile uint64_t *doorbell = word_at(self, args[5], 0);
    if (waiters == NULL || closed == NULL || doorbell == NULL)
        return NULL;
    double timeout = PyFloat_AsDouble(args[6]);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    if (shmc_enter(self) == NULL)
        return NULL;
    int rc = shmc_sleep_past(self, head, cursor, waiters, bit, closed, doorbell, timeout);
    shmc_leave(self);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc);
}

#if SHMC_HAVE_FUTEX
/* A relative futex timeout for `seconds`, defined for every double: NaN and anything not
 * above 0 is 0, and anything longer is cut to SHMC_MAX_SLEEP (callers sleep again). */
#define SHMC_MAX_SLEEP 86400.0
static void
to_timespec(double seconds, struct timespec *ts)
{
    if (!(seconds > 0.0))  /* also NaN */
        seconds = 0.0;
    if (seconds > SHMC_MAX_SLEEP)
        seconds = SHMC_MAX_SLEEP;
    ts->tv_sec = (time_t)seconds;
    long ns = (long)((seconds - (double)ts->tv_sec) * 1e9);
    ts->tv_nsec = ns < 0 ? 0 : (ns > 999999999L ? 999999999L : ns);
}

static inline uint32_t *
futex_word(volatile uint64_t *p)
{
    uint32_t *word = (uint32_t *)p;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    word += 1;
#endif
    return word;
}
#endif

#if SHMC_HAVE_FUTEX
/* Whether futex_waitv works here: 0 not known yet, 1 yes, -1 no (an old kernel, or a
 * seccomp filter that refuses it). Written without the GIL; every writer writes the same. */
static int waitv_state;

/* FUTEX_WAIT on `word` and, at the same time, on ab's private closing word (futex_waitv), so
 * that a release() between our release of the GIL and the start of the wait still wakes us:
 * it sets the closing word first, so the kernel finds it changed. Like syscall(): >= 0
 * woken, -1 with errno; errno ENOSYS if futex_waitv cannot be used. No GIL. */
static long
sleep_two(AtomicBuffer *ab, volatile uint64_t *word, uint32_t expected,
          const struct timespec *relative)
{
    if (__atomic_load_n(&waitv_state, __ATOMIC_RELAXED) < 0) {
        errno = ENOSYS;
        return -1;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += relative->tv_sec;
    until.tv_nsec += relative->tv_nsec;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec += 1;
        until.tv_nsec -= 1000000000L;
    }
    struct shmc_waitv waiters[2] = {
        {expected, (uint64_t)(uintptr_t)futex_word(word), SHMC_FUTEX_32, 0},
        {0, (uint64_t)(uintptr_t)&ab->closing, SHMC_FUTEX_32 | FUTEX_PRIVATE_FLAG, 0},
    };
    long rc = syscall(__NR_futex_waitv, waiters, 2, 0, &until, CLOCK_MONOTONIC);
    if (rc < 0 && (errno == ENOSYS || errno == EPERM)) {
        __atomic_store_n(&waitv_state, -1, __ATOMIC_RELAXED);
        errno = ENOSYS;
        return -1;
    }
    __atomic_store_n(&waitv_state, 1, __ATOMIC_RELAXED);
    return rc;
}
#endif

/* The sleep of a pinned call (see _atomic.h), on its own list entry so that release() can
 * wake it. A release can come between our release of the GIL and the futex call; that
 * wake-up must not be lost. A doorbell we may write (`bump`: readers of pub/sub rings) is
 * bumped by release() first, so a plain FUTEX_WAIT finds it changed. Any other word (the
 * queue words of request/reply and push/pull, an observer's read-only doorbell) must not
 * change, so we wait on it and on ab's private closing word at once (futex_waitv); where the
 * kernel lacks futex_waitv such a release is noticed at the end of the caller's sleep slice
 * (at most 50 ms for those callers). Woken by a release, it returns -1 with SHMClosedError
 * and the caller touches nothing more in the mapping. */
int
shmc_sleep_on(AtomicBuffer *ab, volatile uint64_t *word, uint32_t expected, double timeout,
              int bump)
{
#if SHMC_HAVE_FUTEX
    struct timespec ts;
    to_timespec(timeout, &ts);
    shmc_sleeper me = {ab->sleepers, word, bump && !ab->view.readonly};
    ab->sleepers = &me;
    long rc = -1;
    int err = ENOSYS;
    Py_BEGIN_ALLOW_THREADS
    if (!me.bump) {
        rc = sleep_two(ab, word, expected, &ts);
        err = errno;
    }
    if (rc < 0 && err == ENOSYS) {
        rc = syscall(SYS_futex, futex_word(word), FUTEX_WAIT, expected, &ts, NULL, 0);
        err = errno;
    }
    Py_END_ALLOW_THREADS
    for (shmc_sleeper **link = &ab->sleepers; *link != NULL; link = &(*link)->next) {
        if (*link == &me) {
            *link = me.next;
            break;
        }
    }
    int result;
    if (rc >= 0 || err == EAGAIN)
        result = 1;
    else if (err == ETIMEDOUT)
        result = 0;
    else if (err == EINTR)
        result = PyErr_CheckSignals() < 0 ? -1 : 1;  /* a handler may close us: checked next */
    else {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        result = -1;
    }
    if (ab->closed && result >= 0)
        result = shmc_set_closed_error();
    return result;
#else
    (void)ab; (void)word; (void)expected; (void)timeout; (void)bump;
    PyErr_SetString(PyExc_NotImplementedError, "futex wait is only available on Linux");
    return -1;
#endif
}

/* The body of wait_past, for _ring.c too (the caller has pinned ab): 1 (woken, or no need to
 * sleep), 0 (timed out), -1 with an exception set (a signal handler raised, an unexpected
 * futex error, or SHMClosedError: the buffer was released meanwhile; then the waiter bit is
 * left alone, since whoever closed this end has freed its row). */
int
shmc_sleep_past(AtomicBuffer *ab, volatile uint64_t *head, uint64_t cursor,
                volatile uint64_t *waiters, uint64_t bit, volatile uint64_t *closed,
                volatile uint64_t *doorbell, double timeout)
{
    if (bit)
        a_fetch_or(waiters, bit);
    uint64_t rung = a_load(doorbell);
    int rc = 1;
    if (a_load(head) <= cursor && !a_load(closed))
        rc = shmc_sleep_on(ab, doorbell, (uint32_t)rung, timeout, 1);
    if (ab->closed)
        return rc < 0 ? -1 : shmc_set_closed_error();
    if (bit)
        a_fetch_and(waiters, ~bit);
    return rc;
}

/* Wakes every process sleeping in wait() on the word at p; returns how many, or -1 (errno). */
long
shmc_wake_all(volatile uint64_t *p)
{
#if SHMC_HAVE_FUTEX
    uint32_t *word = (uint32_t *)p;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    word += 1;
#endif
    return syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#else
    /* Without futexes readers poll, so there is nobody to wake. */
    (void)p;
    return 0;
#endif
}

/* wake(offset) -> int: wakes every process sleeping in wait() on that word. */
static PyObject *
AtomicBuffer_wake(AtomicBuffer *self, PyObject *offset)
{
    volatile uint64_t *p = word_at(self, offset, 0);
    if (p == NULL)
        return NULL;
    long rc = shmc_wake_all(p);
    if (rc < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(rc);
}

/* release(): from now on every call raises SHMClosedError. The buffer export is dropped at
 * once, or, while pinned calls are inside, by the last of them to leave; those asleep are
 * woken now (see _atomic.h). */
static PyObject *
AtomicBuffer_release(AtomicBuffer *self, PyObject *unused)
{
    if (self->closed || !self->has_view) {
        self->closed = 1;
        Py_RETURN_NONE;
    }
    self->closed = 1;
    if (self->in_flight == 0) {
        self->has_view = 0;
        PyBuffer_Release(&self->view);
        Py_RETURN_NONE;
    }
#if SHMC_HAVE_FUTEX
    __atomic_store_n(&self->closing, 1, __ATOMIC_SEQ_CST);
    (void)syscall(SYS_futex, &self->closing, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#endif
    for (shmc_sleeper *s = self->sleepers; s != NULL; s = s->next) {
        if (s->bump)
            a_fetch_add(s->word, 1);
        (void)shmc_wake_all(s->word);
    }
    Py_RETURN_NONE;
}

static PyObject *
AtomicBuffer_get_size(AtomicBuffer *self, void *closure)
{
    return PyLong_FromSsize_t(self->has_view && !self->closed ? self->view.len : 0);
}

static PyObject *
AtomicBuffer_get_readonly(AtomicBuffer *self, void *closure)
{
    return PyBool_FromLong(self->has_view && !self->closed ? self->view.readonly : 1);
}

static PyObject *
AtomicBuffer_get_closed(AtomicBuffer *self, void *closure)
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
AtomicBuffer_get_in_flight(AtomicBuffer *self, void *closure)
{
    return PyLong_FromSsize_t(self->in_flight);
}

static PyMethodDef AtomicBuffer_methods[] = {
    {"load", (PyCFunction)AtomicBuffer_load, METH_O, "load(offset) -> int: atomic load of a u64."},
    {"store", (PyCFunction)(void (*)(void))AtomicBuffer_store, METH_FASTCALL,
     "store(offset, value): atomic store of a u64."},
    {"fetch_add", (PyCFunction)(void (*)(void))AtomicBuffer_fetch_add, METH_FASTCALL,
     "fetch_add(offset, delta) -> old value (delta may be negative)."},
    {"fetch_or", (PyCFunction)(void (*)(void))AtomicBuffer_fetch_or, METH_FASTCALL,
     "fetch_or(offset, bits) -> old value."},
    {"fetch_and", (PyCFunction)(void (*)(void))AtomicBuffer_fetch_and, METH_FASTCALL,
     "fetch_and(offset, bits) -> old value."},
    {"compare_exchange", (PyCFunction)(void (*)(void))AtomicBuffer_compare_exchange, METH_FASTCALL,
     "compare_exchange(offset, expected, desired) -> bool."},
    {"load_many", (PyCFunction)(void (*)(void))AtomicBuffer_load_many, METH_FASTCALL,
     "load_many(offset, count) -> bytes: count u64 words, each loaded atomically."},
    {"fence", (PyCFunction)AtomicBuffer_fence, METH_NOARGS, "fence(): a full memory barrier."},
    {"wait", (PyCFunction)(void (*)(void))AtomicBuffer_wait, METH_FASTCALL,
     "wait(offset, expected, timeout) -> bool: futex wait on the word's low 32 bits (Linux)."},
    {"wait_past", (PyCFunction)(void (*)(void))AtomicBuffer_wait_past, METH_FASTCALL,
     "wait_past(head, cursor, waiters, bit, closed, doorbell, timeout) -> bool: a reader's "
     "sleep."},
    {"wake", (PyCFunction)AtomicBuffer_wake, METH_O,
     "wake(offset) -> int: wake all waiters on the word (Linux; elsewhere a no-op)."},
    {"release", (PyCFunction)AtomicBuffer_release, METH_NOARGS,
     "release(): drop the buffer export, now or when the last call inside leaves; further "
     "calls raise SHMClosedError."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef AtomicBuffer_getset[] = {
    {"size", (getter)AtomicBuffer_get_size, NULL, "size of the buffer in bytes", NULL},
    {"readonly", (getter)AtomicBuffer_get_readonly, NULL, "whether stores are refused", NULL},
    {"closed", (getter)AtomicBuffer_get_closed, NULL, "whether release() was called", NULL},
    {"in_flight", (getter)AtomicBuffer_get_in_flight, NULL,
     "calls inside that pinned the buffer (a release waits for them)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject shmc_AtomicBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shm_comm._atomic.AtomicBuffer",
    .tp_basicsize = sizeof(AtomicBuffer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sequentially consistent atomic operations on aligned u64 words of a buffer.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)AtomicBuffer_init,
    .tp_dealloc = (destructor)AtomicBuffer_dealloc,
    .tp_methods = AtomicBuffer_methods,
    .tp_getset = AtomicBuffer_getset,
};

/* _use_futex_waitv(flag) -> bool: for tests: with False, sleeps that cannot bump their word
 * use plain FUTEX_WAIT, as on kernels without futex_waitv. Returns whether it was in use. */
static PyObject *
use_futex_waitv(PyObject *module, PyObject *flag)
{
#if SHMC_HAVE_FUTEX
    int was = __atomic_load_n(&waitv_state, __ATOMIC_RELAXED) >= 0;
    int on = PyObject_IsTrue(flag);
    if (on < 0)
        return NULL;
    __atomic_store_n(&waitv_state, on ? 0 : -1, __ATOMIC_RELAXED);
    return PyBool_FromLong(was);
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef module_functions[] = {
    {"_use_futex_waitv", use_futex_waitv, METH_O,
     "_use_futex_waitv(flag) -> bool: for tests (see _atomic.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef atomic_module = {
    PyModuleDef_HEAD_INIT, "shm_comm._atomic",
    "Atomic u64 operations and futex wait/wake over shared buffers.", -1, module_functions,
};

PyMODINIT_FUNC
PyInit__atomic(void)
{
    if (PyType_Ready(&shmc_AtomicBufferType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&atomic_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&shmc_AtomicBufferType);
    if (PyModule_AddObject(m, "AtomicBuffer", (PyObject *)&shmc_AtomicBufferType) < 0) {
        Py_DECREF(&shmc_AtomicBufferType);
        Py_DECREF(m);
        return NULL;
    }
    if (shmc_add_ring_type(m) < 0 || shmc_add_notifier_type(m) < 0 ||
        PyModule_AddIntConstant(m, "has_futex", SHMC_HAVE_FUTEX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
