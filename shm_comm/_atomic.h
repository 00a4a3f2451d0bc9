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

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
} AtomicBuffer;


long shmc_wake_all(volatile uint64_t *p);
int shmc_sleep_past(volatile uint64_t *head, uint64_t cursor, volatile uint64_t *waiters,
                    uint64_t bit, volatile uint64_t *closed, volatile uint64_t *doorbell,
                    double timeout);

/* Adds the Ring type (_ring.c) to the module. */
int shmc_add_ring_type(PyObject *module);
/* Adds the Notifier type (_notify.c; Linux only) to the module. */
int shmc_add_notifier_type(PyObject *module);
extern PyTypeObject shmc_AtomicBufferType;

#endif
