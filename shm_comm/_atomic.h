/*
 * shm_comm/_atomic.h: what the two C files of shm_comm._atomic share: the sequentially
 * consistent u64 operations and the AtomicBuffer object (see _atomic.c).
 */
#ifndef SHMC_ATOMIC_H
#define SHMC_ATOMIC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if defined(_MSC_VER)
#include <intrin.h>
#include <windows.h>
static inline uint64_t a_load(volatile uint64_t *p) {
    return (uint64_t)_InterlockedCompareExchange64((volatile __int64 *)p, 0, 0);
}
static inline void a_store(volatile uint64_t *p, uint64_t v) {
    _InterlockedExchange64((volatile __int64 *)p, (__int64)v);
}
static inline uint64_t a_fetch_add(volatile uint64_t *p, uint64_t v) {
    return (uint64_t)_InterlockedExchangeAdd64((volatile __int64 *)p, (__int64)v);
}
static inline uint64_t a_fetch_or(volatile uint64_t *p, uint64_t v) {
    return (uint64_t)_InterlockedOr64((volatile __int64 *)p, (__int64)v);
}
static inline uint64_t a_fetch_and(volatile uint64_t *p, uint64_t v) {
    return (uint64_t)_InterlockedAnd64((volatile __int64 *)p, (__int64)v);
}
static inline int a_cas(volatile uint64_t *p, uint64_t expected, uint64_t desired) {
    return (uint64_t)_InterlockedCompareExchange64((volatile __int64 *)p, (__int64)desired,
                                                   (__int64)expected) == expected;
}
static inline void a_fence(void) { MemoryBarrier(); }
#else
static inline uint64_t a_load(volatile uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void a_store(volatile uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t a_fetch_add(volatile uint64_t *p, uint64_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
static inline uint64_t a_fetch_or(volatile uint64_t *p, uint64_t v) {
    return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);
}
static inline uint64_t a_fetch_and(volatile uint64_t *p, uint64_t v) {
    return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST);
}
static inline int a_cas(volatile uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline void a_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
#endif

/* A call asleep on a word of the mapping, on its own C stack, linked into its AtomicBuffer's
 * list for as long as it sleeps, so that release() can wake it. */
typedef struct shmc_sleeper {
    struct shmc_sleeper *next;
    volatile uint64_t *word;  /* the futex word it sleeps on */
    int bump;                 /* a doorbell: release() may bump it before waking */
} shmc_sleeper;

/* The in-flight rule (docs/design.md, "Closing while calls are in flight"): a call that may
 * release the GIL, or run Python code, while it holds pointers into the mapping pins it with
 * shmc_enter() and unpins it with shmc_leave(). release() (close) needs the GIL, so it can
 * only happen while such a call is inside: then it marks the buffer closed, wakes this
 * process's sleepers, and leaves the buffer export to the last call out, which drops it with
 * the GIL held again. A call that never gets the GIL back (a daemon thread at interpreter
 * exit) never lets the mapping go, so it never touches unmapped memory. Every field below is
 * read and written with the GIL held. */
typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;            /* view holds a buffer export of the object */
    int closed;              /* release() was called: calls refuse the buffer */
    Py_ssize_t in_flight;    /* pinned calls */
    shmc_sleeper *sleepers;  /* pinned calls asleep on a word of the mapping */
    uint32_t closing;        /* a private futex word: 1 once released (see shmc_sleep_on) */
} AtomicBuffer;

/* Sets shm_comm.errors.SHMClosedError (a ValueError); returns -1. */
int shmc_set_closed_error(void);

/* Pins the mapping: its base address, or NULL with SHMClosedError set once released. */
static inline char *
shmc_enter(AtomicBuffer *ab)
{
    if (ab->closed || !ab->has_view) {
        shmc_set_closed_error();
        return NULL;
    }
    ab->in_flight++;
    return (char *)ab->view.buf;
}

/* Unpins; the last call out performs a release() that came while it was inside. */
static inline void
shmc_leave(AtomicBuffer *ab)
{
    if (--ab->in_flight == 0 && ab->closed && ab->has_view) {
        ab->has_view = 0;
        PyBuffer_Release(&ab->view);
    }
}

long shmc_wake_all(volatile uint64_t *p);
/* The futex sleep of a pinned call on `word` while it holds `expected` (low 32 bits), for at
 * most `timeout` seconds: 1 woken (or the word changed), 0 timed out, -1 with an exception
 * (SHMClosedError if the buffer was released meanwhile). The caller checks nothing else. */
int shmc_sleep_on(AtomicBuffer *ab, volatile uint64_t *word, uint32_t expected, double timeout,
                  int bump);
int shmc_sleep_past(AtomicBuffer *ab, volatile uint64_t *head, uint64_t cursor,
                    volatile uint64_t *waiters, uint64_t bit, volatile uint64_t *closed,
                    volatile uint64_t *doorbell, double timeout);

/* Adds the Ring type (_ring.c) to the module. */
int shmc_add_ring_type(PyObject *module);
/* Adds the Notifier type (_notify.c; Linux only) to the module. */
int shmc_add_notifier_type(PyObject *module);
extern PyTypeObject shmc_AtomicBufferType;

#endif
