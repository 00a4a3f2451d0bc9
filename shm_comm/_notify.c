/*
 * shm_comm._atomic.Notifier: futex wake-ups turned into readable file descriptors, for event
 * loops (docs/design.md, "Event loops", has the reasoning and the measurements).
 *
 * An event loop can wait on file descriptors only; our receivers are woken through futexes in
 * shared memory. A Notifier owns helper threads that sleep in the kernel on the futex words of
 * every armed watch at once (futex_waitv, Linux >= 5.16: up to 127 watches per thread, so a
 * new thread is started for each further 127), never run Python and never take the GIL.
 *
 * A watch is one-shot: arm(slot, atom, word, expected, announce, value, withdraw) asks for
 * the file descriptor of `slot` to be signalled (8 bytes written: an eventfd's counter goes
 * up) as soon as the 32-bit futex word at `word` no longer holds `expected`, or somebody wakes
 * it. Before arming, the caller has announced itself in the segment exactly as a sleeping
 * reader does (a bit in `waiters`, or a counter), and read `expected` after that; when the
 * watch fires, the notifier withdraws that announcement (clears the bits, or subtracts the
 * value) before it signals. So the ordering argument of a sleeping reader holds unchanged:
 * whoever changes the condition first and then reads the announcement bumps and wakes the
 * word, and either the caller saw the change before arming or the word differs from
 * `expected` when the thread compares it (in the kernel, or here before it sleeps).
 *
 * Memory safety: the threads read a watch's words only while it is armed and only while they
 * hold the notifier's lock; disarm() and the firing both take that lock, so once disarm()
 * returned (or the watch fired) the thread never touches that mapping again, and the caller
 * may let the mapping go. A futex wait on a word that is unmapped meanwhile is harmless (the
 * kernel queues waiters by file page, and a wait on a bad address fails with EFAULT).
 *
 * Without futex_waitv (older kernels) each thread serves one watch with a plain FUTEX_WAIT,
 * in slices of at most a second so that a thread whose watch was disarmed under it moves on.
 * Elsewhere than Linux the type is missing and shm_comm.notify falls back to polling.
 */
#include "_atomic.h"

#if defined(__linux__)
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449 /* the same number on every architecture (asm-generic) */
#endif
#define WAITV_MAX 128       /* the kernel's limit per futex_waitv call */
#define SHMC_FUTEX_32 2     /* FUTEX2_SIZE_U32 */
#define SHMC_FUTEX_PRIVATE 128
#define SINGLE_SLICE_NS 1000000000L
#define LONGEST_SLEEP_NS 10000000000LL /* a thread watching anything wakes at least this often */

struct shmc_waitv {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};

enum { W_FREE = 0, W_IDLE = 1, W_ARMED = 2, W_FIRED = 3 };
enum { WITHDRAW_NONE = 0, WITHDRAW_BITS = 1, WITHDRAW_COUNT = 2 };

typedef struct {
    int fd;                      /* signalled when the watch fires; -1: slot unused */
    int state;
    int shard;                   /* the thread serving it while armed */
    uint32_t *word;              /* the futex word (the low half of a u64 of the segment) */
    uint32_t expected;
    volatile uint64_t *announce; /* what the arming caller announced itself in, or NULL */
    uint64_t value;
    int withdraw;
    int64_t deadline;            /* CLOCK_MONOTONIC ns at which it fires anyway, or 0 */
    uint64_t fired;              /* how often it fired (for tests and stats) */
    int64_t fired_at;            /* CLOCK_MONOTONIC ns of the last firing */
    int dormant;                 /* fired, and its thread still sleeps on its word (below) */
    uint32_t dormant_value;      /* the value it sleeps on then */
    /* The in-flight pin (_atomic.h) on the mapping, from arm() until disarm(), remove() or
     * the next arm(): armed or dormant, the thread reads the mapping. Changed with the GIL. */
    AtomicBuffer *pinned;        /* strong reference, or NULL */
    shmc_sleeper *node;          /* in pinned->sleepers, so that its release() wakes us */
} Watch;

struct Notifier;

typedef struct {
    struct Notifier *owner;
    int index;
    pthread_t thread;
    uint32_t control;            /* futex word: bumped to make the thread look again */
    int armed;                   /* watches it serves */
    int sleeping_on;             /* single mode: the watch it sleeps on, or -1 */
    int64_t set_until;           /* the timeout of its current sleep, CLOCK_MONOTONIC ns (0: none) */
} Shard;

typedef struct Notifier {
    PyObject_HEAD
    pthread_mutex_t lock;
    Watch *watches;
    Py_ssize_t nwatches;
    Shard **shards;
    int nshards;
    int per_thread;              /* watches per thread: 127 with futex_waitv, 1 without */
    int single;                  /* no futex_waitv: one FUTEX_WAIT per thread */
    pid_t pid;                   /* the process that made it (a fork child must not use it) */
    uint64_t wakeups;            /* how often the threads returned from the kernel */
    uint64_t errors;             /* unexpected futex errors (each costs the thread 10 ms) */
    uint64_t kicks_saved;        /* arms that found the word in their thread's set already */
    int last_errno;
} Notifier;

static int
as_int(PyObject *obj, int *out)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in a C int");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static long
futex_wake_private(uint32_t *word)
{
    return syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static uint32_t *
low_half(volatile uint64_t *p)
{
    uint32_t *word = (uint32_t *)p;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    word += 1;
#endif
    return word;
}

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Under the lock: withdraw the announcement, then signal. Withdrawing first means that a
 * caller who sees the descriptor readable and arms again cannot have its new announcement
 * cleared by this one. */
static void
fire(Notifier *n, Watch *w)
{
    if (w->announce != NULL) {
        if (w->withdraw == WITHDRAW_BITS)
            a_fetch_and(w->announce, ~w->value);
        else if (w->withdraw == WITHDRAW_COUNT)
            a_fetch_add(w->announce, (uint64_t)0 - w->value);
    }
    w->announce = NULL;
    w->state = W_FIRED;
    w->fired++;
    w->fired_at = now_ns();
    w->dormant = !n->single;
    w->dormant_value = 0;
    n->shards[w->shard]->armed--;
    uint64_t one = 1;
    ssize_t rc;
    do {
        rc = write(w->fd, &one, sizeof(one));
    } while (rc < 0 && errno == EINTR);
    /* EAGAIN: the counter is already huge, so the descriptor is readable anyway. */
}

static void *
shard_main(void *arg)
{
    Shard *sh = (Shard *)arg;
    Notifier *n = sh->owner;
    struct shmc_waitv wv[WAITV_MAX];
    Py_ssize_t who[WAITV_MAX];
    pthread_mutex_lock(&n->lock);
    for (;;) {
        uint32_t control = __atomic_load_n(&sh->control, __ATOMIC_SEQ_CST);
        int k = 0;
        if (!n->single) {
            wv[0].val = control;
            wv[0].uaddr = (uint64_t)(uintptr_t)&sh->control;
            wv[0].flags = SHMC_FUTEX_32 | SHMC_FUTEX_PRIVATE;
            wv[0].reserved = 0;
            who[0] = -1;
            k = 1;
        }
        int64_t earliest = 0, now = 0;
        for (Py_ssize_t i = 0; i < n->nwatches && k < (n->single ? 1 : WAITV_MAX); i++) {
            Watch *w = &n->watches[i];
            if (w->state != W_ARMED || w->shard != sh->index)
                continue;
            if (w->deadline != 0 && now == 0)
                now = now_ns();
            if (__atomic_load_n(w->word, __ATOMIC_SEQ_CST) != w->expected ||
                (w->deadline != 0 && w->deadline <= now)) {
                fire(n, w);
                continue;
            }
            if (w->deadline != 0 && (earliest == 0 || w->deadline < earliest))
                earliest = w->deadline;
            wv[k].val = w->expected;
            wv[k].uaddr = (uint64_t)(uintptr_t)w->word;
            wv[k].flags = SHMC_FUTEX_32;
            wv[k].reserved = 0;
            who[k] = i;
            k++;
        }
        /* A watch that fired keeps its word in the set for a while, in the room the armed
         * ones leave (its mapping is still pinned): the task that saw it fire usually arms it
         * again soon, on the same word, and then needs no kick (see arm). It leaves the set
         * once its word changes while it is not armed (one spurious wake-up at most). */
        for (Py_ssize_t i = 0; !n->single && i < n->nwatches && k < WAITV_MAX; i++) {
            Watch *w = &n->watches[i];
            if (w->state != W_FIRED || !w->dormant || w->shard != sh->index)
                continue;
            uint32_t current = __atomic_load_n(w->word, __ATOMIC_SEQ_CST);
            if (w->dormant > 1 && current != w->dormant_value) {
                w->dormant = 0;
                continue;
            }
            w->dormant = 2;
            w->dormant_value = current;
            wv[k].val = current;
            wv[k].uaddr = (uint64_t)(uintptr_t)w->word;
            wv[k].flags = SHMC_FUTEX_32;
            wv[k].reserved = 0;
            who[k] = i;
            k++;
        }
        if (!n->single && k > 1) {
            if (now == 0)
                now = now_ns();
            if (earliest == 0 || earliest > now + LONGEST_SLEEP_NS)
                earliest = now + LONGEST_SLEEP_NS;
        }
        sh->sleeping_on = n->single && k == 1 ? (int)who[0] : -1;
        sh->set_until = earliest;
        pthread_mutex_unlock(&n->lock);
        long rc;
        if (!n->single) {
            struct timespec until = {(time_t)(earliest / 1000000000LL),
                                     (long)(earliest % 1000000000LL)};
            rc = syscall(SYS_futex_waitv, wv, (unsigned int)k, 0, earliest ? &until : NULL,
                         CLOCK_MONOTONIC);
        } else if (k == 0) {
            rc = syscall(SYS_futex, &sh->control, FUTEX_WAIT_PRIVATE, control, NULL, NULL, 0);
            rc = rc == 0 ? -2 : rc;
        } else {
            int64_t wait_ns = SINGLE_SLICE_NS;
            if (earliest != 0 && earliest - now < wait_ns)
                wait_ns = earliest - now > 0 ? earliest - now : 0;
            struct timespec slice = {(time_t)(wait_ns / 1000000000LL),
                                     (long)(wait_ns % 1000000000LL)};
            rc = syscall(SYS_futex, (uint32_t *)(uintptr_t)wv[0].uaddr, FUTEX_WAIT,
                         (uint32_t)wv[0].val, &slice, NULL, 0);
            rc = rc == 0 ? 0 : -1;
        }
        int err = rc < 0 ? errno : 0;
        if (rc < 0 && rc != -2 && err != EAGAIN && err != EINTR && err != ETIMEDOUT) {
            /* Not expected (the words are mapped while armed): do not spin on it. */
            struct timespec pause = {0, 10000000L};
            nanosleep(&pause, NULL);
        }
        pthread_mutex_lock(&n->lock);
        n->wakeups++;
        if (rc < 0 && rc != -2 && err != EAGAIN && err != EINTR && err != ETIMEDOUT) {
            n->errors++;
            n->last_errno = err;
        }
        /* Woken on a watch's word: something happened there (normally its value changed too,
         * which the loop above notices; a wake without a change still fires, harmlessly). */
        if (rc >= 0 && rc < k && who[rc] >= 0) {
            Watch *w = &n->watches[who[rc]];
            if (w->state == W_ARMED && w->shard == sh->index &&
                (uint64_t)(uintptr_t)w->word == wv[rc].uaddr)
                fire(n, w);
        }
    }
    return NULL; /* not reached: the threads live as long as the process */
}

/* Under the lock: a thread with room for one more watch, started if need be; -1 (with
 * errno) if no thread could be started. */
static int
shard_for_new_watch(Notifier *n)
{
    for (int s = 0; s < n->nshards; s++) {
        Shard *sh = n->shards[s];
        /* (single mode: not a thread that may still sleep on a disarmed watch's word) */
        if (sh->armed < n->per_thread && (!n->single || sh->sleeping_on < 0))
            return s;
    }
    Shard **grown = PyMem_RawRealloc(n->shards, sizeof(Shard *) * (size_t)(n->nshards + 1));
    if (grown == NULL) {
        errno = ENOMEM;
        return -1;
    }
    n->shards = grown;
    Shard *sh = PyMem_RawCalloc(1, sizeof(Shard));
    if (sh == NULL) {
        errno = ENOMEM;
        return -1;
    }
    sh->owner = n;
    sh->index = n->nshards;
    sh->sleeping_on = -1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024 + sizeof(struct shmc_waitv) * WAITV_MAX * 2);
    /* The thread must not take signals meant for Python's main thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&sh->thread, &attr, shard_main, sh);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        PyMem_RawFree(sh);
        errno = err;
        return -1;
    }
    n->shards[n->nshards] = sh;
    return n->nshards++;
}

/* Under the lock: make the thread of shard `s` look at its watches again. */
static void
kick(Notifier *n, int s)
{
    Shard *sh = n->shards[s];
    __atomic_fetch_add(&sh->control, 1, __ATOMIC_SEQ_CST);
    futex_wake_private(&sh->control);
}

static int
check_usable(Notifier *n)
{
    if (n->pid != getpid()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this Notifier belongs to the parent process (fork): make a new one");
        return -1;
    }
    return 0;
}

/* Under the lock, so it must not call into Python (a garbage collection could run a
 * finalizer that takes the lock): the watch of a slot index, or NULL. */
static Watch *
watch_at(Notifier *n, Py_ssize_t slot)
{
    if (slot < 0 || slot >= n->nwatches || n->watches[slot].fd < 0)
        return NULL;
    return &n->watches[slot];
}

static int
slot_arg(PyObject *obj, Py_ssize_t *slot)
{
    *slot = PyLong_AsSsize_t(obj);
    return *slot == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *
no_slot(Py_ssize_t slot)
{
    PyErr_Format(PyExc_ValueError, "no watch slot %zd", slot);
    return NULL;
}

static int
Notifier_init(Notifier *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"single", NULL};
    int single = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p", kwlist, &single))
        return -1;
    if (self->pid != 0) {
        PyErr_SetString(PyExc_RuntimeError, "Notifier cannot be initialised twice");
        return -1;
    }
    if (single < 0 || !single) {
        /* Probe: an empty futex_waitv fails with EINVAL where it exists, ENOSYS where not. */
        long rc = syscall(SYS_futex_waitv, NULL, 0, 0, NULL, 0);
        int have_waitv = !(rc < 0 && (errno == ENOSYS || errno == EPERM));
        if (single < 0)
            single = !have_waitv;
        else if (!have_waitv) {
            PyErr_SetString(PyExc_OSError, "this kernel has no futex_waitv (Linux >= 5.16)");
            return -1;
        }
    }
    pthread_mutex_init(&self->lock, NULL);
    self->single = single;
    self->per_thread = single ? 1 : WAITV_MAX - 1;
    self->pid = getpid();
    return 0;
}

static void
Notifier_dealloc(Notifier *self)
{
    /* Only reached for a notifier that never started a thread (shm_comm.notify keeps the one
     * in use alive for the life of the process; its threads need its memory). */
    if (self->nshards == 0) {
        PyMem_RawFree(self->watches);
        PyMem_RawFree(self->shards);
        if (self->pid != 0)
            pthread_mutex_destroy(&self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* add(fd) -> slot: a watch slot that signals `fd` (the caller keeps fd open until remove). */
static PyObject *
Notifier_add(Notifier *self, PyObject *fd_obj)
{
    if (check_usable(self) < 0)
        return NULL;
    int fd;
    if (as_int(fd_obj, &fd) < 0)
        return NULL;
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "fd must be >= 0");
        return NULL;
    }
    Py_ssize_t slot = -1;
    pthread_mutex_lock(&self->lock);
    for (Py_ssize_t i = 0; i < self->nwatches; i++) {
        if (self->watches[i].fd < 0) {
            slot = i;
            break;
        }
    }
    if (slot < 0) {
        Watch *grown = PyMem_RawRealloc(self->watches, sizeof(Watch) * (size_t)(self->nwatches + 1));
        if (grown == NULL) {
            pthread_mutex_unlock(&self->lock);
            return PyErr_NoMemory();
        }
        self->watches = grown;
        memset(&grown[self->nwatches], 0, sizeof(Watch));
        grown[self->nwatches].fd = -1;
        slot = self->nwatches++;
    }
    Watch *w = &self->watches[slot];
    shmc_sleeper *node = w->node;  /* a freed slot keeps its node (in no list by then) */
    memset(w, 0, sizeof(*w));
    w->node = node != NULL ? node : PyMem_RawCalloc(1, sizeof(shmc_sleeper));
    w->fd = -1;  /* (free until it has its node) */
    if (w->node == NULL) {
        pthread_mutex_unlock(&self->lock);
        return PyErr_NoMemory();
    }
    w->fd = fd;
    w->shard = -1;
    w->state = W_IDLE;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromSsize_t(slot);
}

/* Under the lock: take an armed watch away from its thread. Returns whether it was armed. In
 * single mode its thread may be asleep on the watch's word: wake it, so it does not sleep on a
 * word of a mapping that may go away (it would wake within its slice anyway). */
static int
disarm_locked(Notifier *n, Watch *w)
{
    w->dormant = 0;
    if (w->state != W_ARMED)
        return 0;
    Shard *sh = n->shards[w->shard];
    sh->armed--;
    w->state = W_IDLE;
    if (n->single && sh->sleeping_on == (int)(w - n->watches))
        syscall(SYS_futex, w->word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    /* The announcement stays: the caller withdraws it (it knows whether it still sleeps). */
    w->announce = NULL;
    return 1;
}

/* GIL held, notifier lock held: take the watch's pin away (its node leaves the sleepers
 * list); the caller drops it with drop_pin() after unlocking (shmc_leave may release the
 * buffer export, which must not happen under our lock). */
static AtomicBuffer *
take_pin(Watch *w)
{
    AtomicBuffer *ab = w->pinned;
    if (ab != NULL) {
        for (shmc_sleeper **link = &ab->sleepers; *link != NULL; link = &(*link)->next) {
            if (*link == w->node) {
                *link = w->node->next;
                break;
            }
        }
        w->pinned = NULL;
    }
    return ab;
}

/* GIL held, no lock: undo a shmc_enter() and the reference a pin holds. */
static void
drop_pin(AtomicBuffer *ab)
{
    if (ab != NULL) {
        shmc_leave(ab);
        Py_DECREF(ab);
    }
}

#define CHECK_NARGS(n, name)                                                              \
    if (nargs != (n)) {                                                                   \
        PyErr_Format(PyExc_TypeError, name "() takes exactly %d arguments", (int)(n));   \
        return NULL;                                                                      \
    }

static int
arg_u64(PyObject *obj, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLongMask(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* The aligned word at `offset` of a buffer pinned by the caller, or NULL with an exception. */
static volatile uint64_t *
buffer_word(AtomicBuffer *atom, PyObject *offset_obj, int need_write)
{
    Py_ssize_t offset = PyLong_AsSsize_t(offset_obj);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    if (offset < 0 || offset > atom->view.len - 8 || offset % 8 != 0 ||
        ((uintptr_t)atom->view.buf & 7u) != 0) {
        PyErr_Format(PyExc_ValueError, "offset %zd is not an aligned word of %zd bytes", offset,
                     atom->view.len);
        return NULL;
    }
    if (need_write && atom->view.readonly) {
        PyErr_SetString(PyExc_TypeError, "buffer is read-only");
        return NULL;
    }
    return (volatile uint64_t *)((char *)atom->view.buf + offset);
}

/* arm(slot, atom, word, expected, announce, value, withdraw, timeout, bump) -> bool
 * Signal the slot's fd once the low 32 bits of the u64 at `word` differ from `expected` (or it
 * is woken), or `timeout` seconds passed (< 0: never). `announce` (an offset, or -1) and
 * `value` say what to withdraw when it fires: withdraw 1 clears those bits, 2 subtracts
 * value, 0 nothing. Returns True if armed, False if the word already differs (then nothing is
 * armed and nothing withdrawn: the caller looks again). Arming an armed slot re-arms it.
 * The watch pins the mapping (the in-flight rule, _atomic.h) until disarm(), remove() or the
 * next arm(), and joins its sleepers, so that atom.release() meanwhile wakes the word (`bump`:
 * a doorbell it may bump first, so that the change cannot be missed); SHMClosedError if the
 * buffer is released already. */
static PyObject *
Notifier_arm(Notifier *self, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_NARGS(9, "arm");
    if (check_usable(self) < 0)
        return NULL;
    if (!PyObject_TypeCheck(args[1], &shmc_AtomicBufferType)) {
        PyErr_SetString(PyExc_TypeError, "arm() needs an AtomicBuffer");
        return NULL;
    }
    AtomicBuffer *atom = (AtomicBuffer *)args[1];
    uint64_t expected, value;
    if (arg_u64(args[3], &expected) < 0 || arg_u64(args[5], &value) < 0)
        return NULL;
    int withdraw;
    if (as_int(args[6], &withdraw) < 0)
        return NULL;
    if (withdraw < WITHDRAW_NONE || withdraw > WITHDRAW_COUNT) {
        PyErr_Format(PyExc_ValueError, "withdraw must be 0, 1 or 2, got %d", withdraw);
        return NULL;
    }
    double timeout = PyFloat_AsDouble(args[7]);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    int64_t deadline = 0;
    if (timeout >= 0) {
        if (!(timeout < 1e9)) {  /* also NaN: refuse rather than overflow */
            PyErr_SetString(PyExc_ValueError, "timeout must be below 1e9 seconds");
            return NULL;
        }
        deadline = now_ns() + (int64_t)(timeout * 1e9) + 1;
    }
    int bump = PyObject_IsTrue(args[8]);
    Py_ssize_t slot, announce_offset = PyLong_AsSsize_t(args[4]);
    if (bump < 0 || (announce_offset == -1 && PyErr_Occurred()) || slot_arg(args[0], &slot) < 0)
        return NULL;
    if (shmc_enter(atom) == NULL)  /* the pin; SHMClosedError once released */
        return NULL;
    int announcing = announce_offset >= 0 && withdraw != WITHDRAW_NONE;
    volatile uint64_t *word = buffer_word(atom, args[2], 0);
    volatile uint64_t *announce = word != NULL && announcing ? buffer_word(atom, args[4], 1)
                                                             : NULL;
    if (word == NULL || (announcing && announce == NULL)) {
        shmc_leave(atom);
        return NULL;
    }
    pthread_mutex_lock(&self->lock);
    Watch *w = watch_at(self, slot);
    if (w == NULL) {
        pthread_mutex_unlock(&self->lock);
        shmc_leave(atom);
        return no_slot(slot);
    }
    /* Fired, and its thread's current set still holds its word (dormant == 2, see
     * shard_main)? The same address means the same mapping: the caller still pins it. */
    int asleep_on_it = w->state == W_FIRED && w->dormant == 2 &&
                       w->word == low_half(word) && !self->single;
    int old_shard = w->shard;
    disarm_locked(self, w);
    w->state = W_IDLE;
    AtomicBuffer *old_pin = take_pin(w);
    /* Drain the descriptor (non-blocking): it says nothing until this watch fires. */
    uint64_t drained;
    while (read(w->fd, &drained, sizeof(drained)) > 0) {
    }
    uint32_t *word32 = low_half(word);
    if (__atomic_load_n(word32, __ATOMIC_SEQ_CST) != (uint32_t)expected) {
        pthread_mutex_unlock(&self->lock);
        drop_pin(old_pin);
        shmc_leave(atom);
        Py_RETURN_FALSE;
    }
    int s = w->shard;
    if (self->single || s < 0 || s >= self->nshards || self->shards[s]->armed >= self->per_thread)
        s = shard_for_new_watch(self);
    if (s < 0) {
        int err = errno;
        pthread_mutex_unlock(&self->lock);
        drop_pin(old_pin);
        shmc_leave(atom);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_INCREF(atom);
    w->pinned = atom;
    w->node->word = word;
    w->node->bump = bump && !atom->view.readonly;
    w->node->next = atom->sleepers;
    atom->sleepers = w->node;
    w->word = word32;
    w->expected = (uint32_t)expected;
    w->announce = announce;
    w->value = value;
    w->withdraw = withdraw;
    w->deadline = deadline;
    w->shard = s;
    w->state = W_ARMED;
    w->dormant = 0;
    Shard *sh = self->shards[s];
    sh->armed++;
    /* Its thread needs a kick to take the word into its set, unless the set holds it already
     * (this watch, dormant): then the thread sleeps until the word changes from the value it
     * compared (or returns at once if the word differs already) and looks at this watch
     * afterwards, which is all a kick would make it do; and unless this watch's deadline
     * comes before the thread's timeout. */
    if (!asleep_on_it || s != old_shard ||
        (deadline != 0 && (sh->set_until == 0 || deadline < sh->set_until)))
        kick(self, s);
    else
        self->kicks_saved++;
    pthread_mutex_unlock(&self->lock);
    drop_pin(old_pin);
    Py_RETURN_TRUE;
}

/* disarm(slot) -> bool: stop watching (whether it was still armed). Afterwards the threads
 * never touch the watch's mapping again. The announcement is the caller's to withdraw. */
static PyObject *
Notifier_disarm(Notifier *self, PyObject *slot_obj)
{
    Py_ssize_t slot;
    if (check_usable(self) < 0 || slot_arg(slot_obj, &slot) < 0)
        return NULL;
    pthread_mutex_lock(&self->lock);
    Watch *w = watch_at(self, slot);
    int was = w != NULL ? disarm_locked(self, w) : 0;
    AtomicBuffer *pin = NULL;
    if (w != NULL) {
        if (w->state == W_FIRED)
            w->state = W_IDLE;
        pin = take_pin(w);
    }
    pthread_mutex_unlock(&self->lock);
    if (w == NULL)
        return no_slot(slot);
    drop_pin(pin);
    return PyBool_FromLong(was);
}

/* armed(slot) -> bool */
static PyObject *
Notifier_armed(Notifier *self, PyObject *slot_obj)
{
    Py_ssize_t slot;
    if (slot_arg(slot_obj, &slot) < 0)
        return NULL;
    pthread_mutex_lock(&self->lock);
    Watch *w = watch_at(self, slot);
    int armed = w != NULL && w->state == W_ARMED;
    pthread_mutex_unlock(&self->lock);
    if (w == NULL)
        return no_slot(slot);
    return PyBool_FromLong(armed);
}

/* fired(slot) -> (count, ns): how often the watch fired so far, and when it last did
 * (CLOCK_MONOTONIC nanoseconds, as time.monotonic_ns() and time.perf_counter_ns()). */
static PyObject *
Notifier_fired(Notifier *self, PyObject *slot_obj)
{
    Py_ssize_t slot;
    if (slot_arg(slot_obj, &slot) < 0)
        return NULL;
    pthread_mutex_lock(&self->lock);
    Watch *w = watch_at(self, slot);
    unsigned long long fired = w != NULL ? w->fired : 0;
    long long at = w != NULL ? w->fired_at : 0;
    pthread_mutex_unlock(&self->lock);
    if (w == NULL)
        return no_slot(slot);
    return Py_BuildValue("(KL)", fired, at);
}

/* remove(slot): disarm and free the slot (the caller closes the fd afterwards). */
static PyObject *
Notifier_remove(Notifier *self, PyObject *slot_obj)
{
    Py_ssize_t slot;
    if (check_usable(self) < 0 || slot_arg(slot_obj, &slot) < 0)
        return NULL;
    pthread_mutex_lock(&self->lock);
    Watch *w = watch_at(self, slot);
    AtomicBuffer *pin = NULL;
    if (w != NULL) {
        disarm_locked(self, w);
        pin = take_pin(w);
        w->fd = -1;
        w->state = W_FREE;
    }
    pthread_mutex_unlock(&self->lock);
    if (w == NULL)
        return no_slot(slot);
    drop_pin(pin);
    Py_RETURN_NONE;
}

static PyObject *
Notifier_get_threads(Notifier *self, void *closure)
{
    pthread_mutex_lock(&self->lock);
    int n = self->nshards;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromLong(n);
}

static PyObject *
Notifier_get_armed(Notifier *self, void *closure)
{
    long armed = 0;
    pthread_mutex_lock(&self->lock);
    for (int s = 0; s < self->nshards; s++)
        armed += self->shards[s]->armed;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromLong(armed);
}

static PyObject *
Notifier_get_wakeups(Notifier *self, void *closure)
{
    pthread_mutex_lock(&self->lock);
    uint64_t n = self->wakeups;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *
Notifier_get_errors(Notifier *self, void *closure)
{
    pthread_mutex_lock(&self->lock);
    unsigned long long errors = self->errors;
    int last = self->last_errno;
    pthread_mutex_unlock(&self->lock);
    return Py_BuildValue("(Ki)", errors, last);
}

static PyObject *
Notifier_get_kicks_saved(Notifier *self, void *closure)
{
    pthread_mutex_lock(&self->lock);
    unsigned long long saved = self->kicks_saved;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromUnsignedLongLong(saved);
}

static PyObject *
Notifier_get_single(Notifier *self, void *closure)
{
    return PyBool_FromLong(self->single);
}

static PyMethodDef Notifier_methods[] = {
    {"add", (PyCFunction)Notifier_add, METH_O, "add(fd) -> slot: a watch slot signalling fd."},
    {"arm", (PyCFunction)(void (*)(void))Notifier_arm, METH_FASTCALL,
     "arm(slot, atom, word, expected, announce, value, withdraw, timeout, bump) -> bool: "
     "signal the slot's fd once the futex word differs from expected (or timeout s passed)."},
    {"disarm", (PyCFunction)Notifier_disarm, METH_O, "disarm(slot) -> bool: whether it was armed."},
    {"armed", (PyCFunction)Notifier_armed, METH_O, "armed(slot) -> bool."},
    {"fired", (PyCFunction)Notifier_fired, METH_O,
     "fired(slot) -> (count, monotonic ns of the last one)."},
    {"remove", (PyCFunction)Notifier_remove, METH_O, "remove(slot): disarm and free the slot."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Notifier_getset[] = {
    {"threads", (getter)Notifier_get_threads, NULL, "helper threads started so far", NULL},
    {"armed_count", (getter)Notifier_get_armed, NULL, "watches armed right now", NULL},
    {"wakeups", (getter)Notifier_get_wakeups, NULL, "returns of the threads from the kernel",
     NULL},
    {"errors", (getter)Notifier_get_errors, NULL,
     "(count, last errno) of unexpected futex errors in the threads", NULL},
    {"kicks_saved", (getter)Notifier_get_kicks_saved, NULL,
     "arms whose thread already slept on the word (no wake-up needed)", NULL},
    {"single", (getter)Notifier_get_single, NULL,
     "True when each thread serves one watch (no futex_waitv)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject NotifierType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shm_comm._atomic.Notifier",
    .tp_basicsize = sizeof(Notifier),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Helper threads that signal file descriptors when futex words change.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Notifier_init,
    .tp_dealloc = (destructor)Notifier_dealloc,
    .tp_methods = Notifier_methods,
    .tp_getset = Notifier_getset,
};

int
shmc_add_notifier_type(PyObject *module)
{
    if (PyType_Ready(&NotifierType) < 0)
        return -1;
    Py_INCREF(&NotifierType);
    if (PyModule_AddObject(module, "Notifier", (PyObject *)&NotifierType) < 0) {
        Py_DECREF(&NotifierType);
        return -1;
    }
    return 0;
}

#else /* not Linux: no Notifier type; shm_comm.notify polls instead */

int
shmc_add_notifier_type(PyObject *module)
{
    (void)module;
    return 0;
}

#endif
