/*
 * shm_comm._atomic.Ring: the ring's per-message steps in C, for speed.
 *
 * In Python each step costs ~1 µs of interpreter overhead, more than everything else on the
 * hot path (docs/design.md has the protocol and its ordering argument):
 *
 *   writer          all of RingWriter's work: the free list, the buffers held by zero-copy
 *                   readers and a mirror of the entries live here; write/commit take a free
 *                   buffer, copy, write the slot header, store the entry, bytes_total and
 *                   head, wake sleepers, and file the evicted buffer (free, or held).
 *   take/hold/      the readers' common case only: the next messages are there and intact.
 *   take_many/      Anything else (evicted, overwritten during the copy, a corrupted entry or
 *   gather          length) returns False or stops the batch, and ring.py's careful path
 *                   decides what happened.
 *
 * The memory orders are those of ring.py: every shared word goes through the seq_cst
 * operations of _atomic.h; payload and slot header are plain memory published by the
 * seq_cst store of the entry and validated by the reader check (intact_from: a full fence
 * and a second load of the entry), which every read path uses, ring.py's careful path too.
 *
 * Every method that touches the mapping pins it (ring_enter/ring_leave, the in-flight rule
 * of _atomic.h), so a close() from another thread, or from Python code that runs inside the
 * call (a signal handler, a finalizer), never unmaps it under us. Every size and offset that
 * comes from Python is checked as if it were hostile, without overflow.
 * The slot header is layout.SLOT_HEADER ("<QQIBB": seq, timestamp_ns, length, encoding,
 * flags) at the start of a buffer of layout.BUFFER_HEADER_SIZE bytes; tests check the two
 * agree.
 */
#include "_atomic.h"

#include <string.h>

#define BUFFER_HEADER_SIZE 64
#define ENTRY_INDEX_BITS 16
#define ENTRY_INDEX_MASK ((1u << ENTRY_INDEX_BITS) - 1u)

typedef struct {
    PyObject_HEAD
    AtomicBuffer *atom;  /* strong reference; its export keeps the mapping alive */
    char *base;          /* atom->view.buf (an AtomicBuffer never changes its buffer) */
    Py_ssize_t head, waiters, bytes_total, holders, entries, buffers, stride, slot_size;
    Py_ssize_t held_words, record_size;  /* row r's held word: held_words + r * record_size */
    Py_ssize_t doorbell;                  /* what sleeping readers wait on (see wait_past) */
    uint64_t num_slots, num_buffers, num_rows;
    /* The writer's private state, after writer_init() (only the one publishing process): */
    uint64_t *mirror;       /* what we last stored in each ring entry, so evicting needs no load */
    uint16_t *free_list;    /* buffers ready for a message (a stack) */
    uint16_t *held_list;    /* evicted buffers still pinned by a zero-copy reader */
    Py_ssize_t nfree, nheld;
    uint64_t w_head, w_bytes;
    long long loaned;       /* the reserved buffer, or -1 */
    PyObject *full_error;   /* raised when every buffer is pinned (a corrupted segment) */
    /* Blocking sends (after watch_cursors()): where the rows' state and cursor words and the
     * membership counter are, and the last lowest cursor seen with the membership then. */
    Py_ssize_t membership, rec_state, rec_cursor;
    uint64_t active_code, room_membership, room_bound;
    int watching;
    /* A reader's count of copies (or pins) the reader check discarded: the writer overwrote
     * the message while we read it. */
    uint64_t torn;
} Ring;

static inline uint64_t rd_le64(const char *p)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

static inline uint32_t rd_le32(const char *p)
{
    const unsigned char *b = (const unsigned char *)p;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline void wr_le64(char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (char)(v & 0xFF);
}

static inline void wr_le32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (char)(v & 0xFF);
}

static inline volatile uint64_t *word(const Ring *self, Py_ssize_t offset)
{
    return (volatile uint64_t *)(self->base + offset);
}

static inline volatile uint64_t *entry_word(const Ring *self, uint64_t seq)
{
    return word(self, self->entries + 8 * (Py_ssize_t)(seq % self->num_slots));
}

/* Pins the mapping for this call: its base address, or NULL with an exception (closed:
 * SHMClosedError). Every successful ring_enter is paired with one ring_leave. */
static char *
ring_enter(Ring *self, int need_write)
{
    char *base = shmc_enter(self->atom);
    if (base == NULL)
        return NULL;
    if (need_write && self->atom->view.readonly) {
        shmc_leave(self->atom);
        PyErr_SetString(PyExc_TypeError, "buffer is read-only");
        return NULL;
    }
    return base;
}

static inline void
ring_leave(Ring *self)
{
    shmc_leave(self->atom);
}

/* Copies a payload into a buffer. Large ones (LARGE_COPY and up) are copied without the GIL
 * (the mapping stays pinned; the buffer is marked reserved meanwhile, so another thread's
 * writer call is refused instead of racing), and on x86-64 with non-temporal stores
 * (STREAM_COPY and up): plain stores first read every destination line, which halves the
 * bandwidth of a big copy (16 MiB into shared memory: 22-26 GB/s streamed, 13-15 GB/s
 * plain, here), while the frame is read by another core anyway. Measured end to end (send,
 * then another process reads all of it): streaming wins from 4 MiB (4 MiB 0.36-0.47 ms
 * against 0.48-0.57, 1080p RGB 0.53-0.61 against 0.59-0.72) and loses below (2 MiB 0.19
 * against 0.14-0.17, 1 MiB 0.09-0.11 against 0.06), where the consumer finds plainly
 * stored lines in the shared cache. The stores are fenced before the entry publishes them. */
#define LARGE_COPY ((size_t)1 << 20)
#define STREAM_COPY ((size_t)4 << 20)

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
static void
stream_copy(char *dst, const char *src, size_t n)
{
    size_t head = (16 - ((uintptr_t)dst & 15)) & 15;
    memcpy(dst, src, head);
    dst += head;
    src += head;
    n -= head;
    for (; n >= 64; n -= 64, src += 64, dst += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)src);
        __m128i b = _mm_loadu_si128((const __m128i *)(src + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + 48));
        _mm_stream_si128((__m128i *)dst, a);
        _mm_stream_si128((__m128i *)(dst + 16), b);
        _mm_stream_si128((__m128i *)(dst + 32), c);
        _mm_stream_si128((__m128i *)(dst + 48), d);
    }
    memcpy(dst, src, n);
    _mm_sfence();  /* non-temporal stores are weakly ordered: finish them before publishing */
}
#else
#define stream_copy memcpy
#endif

static void
copy_payload(Ring *self, uint64_t index, char *dst, const void *src, size_t n)
{
    if (n < LARGE_COPY) {
        memcpy(dst, src, n);
        return;
    }
    self->loaned = (long long)index;
    Py_BEGIN_ALLOW_THREADS
    if (n >= STREAM_COPY)
        stream_copy(dst, (const char *)src, n);
    else
        memcpy(dst, src, n);
    Py_END_ALLOW_THREADS
    self->loaned = -1;
}

/* A method body that runs with the mapping pinned, and its wrapper. */
#define PINNED_FASTCALL(name, need_write)                                                 \
    static PyObject *name##_pinned(Ring *, char *, PyObject *const *, Py_ssize_t);        \
    static PyObject *name(Ring *self, PyObject *const *args, Py_ssize_t nargs)            \
    {                                                                                     \
        char *base = ring_enter(self, need_write);                                        \
        if (base == NULL)                                                                 \
            return NULL;                                                                  \
        PyObject *result = name##_pinned(self, base, args, nargs);                        \
        ring_leave(self);                                                                 \
        return result;                                                                    \
    }

static int
Ring_init(Ring *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"atom", "head", "waiters", "bytes_total", "holders", "entries",
                             "num_slots", "num_buffers", "buffers", "stride", "slot_size",
                             "held_words", "record_size", "num_rows", "doorbell", NULL};
    PyObject *atom;
    Py_ssize_t head, waiters, bytes_total, holders, entries, num_slots, num_buffers, buffers,
        stride, slot_size, held_words, record_size, num_rows, doorbell;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!nnnnnnnnnnnnnn", kwlist,
                                     &shmc_AtomicBufferType, &atom, &head, &waiters,
                                     &bytes_total, &holders, &entries, &num_slots, &num_buffers,
                                     &buffers, &stride, &slot_size, &held_words, &record_size,
                                     &num_rows, &doorbell))
        return -1;
    AtomicBuffer *ab = (AtomicBuffer *)atom;
    if (self->atom != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Ring is already initialised");
        return -1;
    }
    if (ab->closed || !ab->has_view)
        return shmc_set_closed_error();
    Py_ssize_t len = ab->view.len;
    Py_ssize_t words[] = {head, waiters, bytes_total, holders, entries, doorbell};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (words[i] < 0 || words[i] > len - 8 || words[i] % 8 != 0) {
            PyErr_Format(PyExc_ValueError, "word offset %zd invalid for %zd bytes", words[i], len);
            return -1;
        }
    }
    /* Each test only combines values the tests before it have bounded, so none overflows:
     * 0 <= slot_size <= 2**32 - 1, so BUFFER_HEADER_SIZE + slot_size fits; entries <= len - 8
     * (above), so len - entries >= 8; 0 <= buffers <= len; stride >= 64; num_rows <= 64 and
     * record_size <= len / 64, so record_size * (num_rows - 1) < len. */
    if (num_slots < 1 || num_buffers < 1 || num_buffers > (Py_ssize_t)ENTRY_INDEX_MASK + 1 ||
        slot_size < 0 || slot_size > (Py_ssize_t)UINT32_MAX ||
        stride < BUFFER_HEADER_SIZE + slot_size || buffers < 0 || buffers > len ||
        num_slots > (len - entries) / 8 || (len - buffers) / stride < num_buffers ||
        num_rows < 0 || num_rows > 64 || record_size < 8 || record_size % 8 != 0 ||
        record_size > len / 64 || held_words < 0 || held_words % 8 != 0 || held_words > len ||
        (num_rows > 0 && record_size * (num_rows - 1) > len - 8 - held_words)) {
        PyErr_SetString(PyExc_ValueError, "ring geometry does not fit the buffer");
        return -1;
    }
    Py_INCREF(atom);
    Py_XSETREF(self->atom, ab);
    self->base = (char *)ab->view.buf;
    self->head = head;
    self->waiters = waiters;
    self->bytes_total = bytes_total;
    self->holders = holders;
    self->entries = entries;
    self->buffers = buffers;
    self->stride = stride;
    self->slot_size = slot_size;
    self->num_slots = (uint64_t)num_slots;
    self->num_buffers = (uint64_t)num_buffers;
    self->held_words = held_words;
    self->record_size = record_size;
    self->num_rows = (uint64_t)num_rows;
    self->doorbell = doorbell;
    return 0;
}

static void
Ring_dealloc(Ring *self)
{
    PyMem_Free(self->mirror);
    PyMem_Free(self->free_list);
    PyMem_Free(self->held_list);
    Py_XDECREF(self->full_error);
    Py_XDECREF(self->atom);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
arg_u64(PyObject *obj, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = (uint64_t)v;
    return 0;
}

#define CHECK_NARGS(n, name)                                                              \
    if (nargs != (n)) {                                                                   \
        PyErr_Format(PyExc_TypeError, name "() takes exactly %d arguments", (int)(n));   \
        return NULL;                                                                      \
    }

/* Stores bytes_total and head (the message is out), then wakes sleepers if any announced. */
static void
publish_head_word(Ring *self)
{
    a_store(word(self, self->bytes_total), self->w_bytes);
    a_store(word(self, self->head), self->w_head);
    /* Somebody announced a sleep: ring the doorbell (see wait_past for the ordering). A
     * failed wake-up (it cannot fail on a mapped word) would only cost sleepers their slice,
     * so it is not reported as a failed publish. */
    if (a_load(word(self, self->waiters))) {
        a_fetch_add(word(self, self->doorbell), 1);
        (void)shmc_wake_all(word(self, self->doorbell));
    }
}

/* ---- the writer: RingWriter's steps (ring.py keeps the API and the error texts) ---- */

/* writer_init(full_error): become the writer of a fresh segment (head 0, no ring entry), so
 * every buffer starts free. Nothing ever takes over a segment that was written to: a new
 * publisher of a channel whose publisher died builds a new segment (segment.py), and the
 * held buffers of a written one could not be known from its entries anyway. */
static PyObject *
Ring_writer_init(Ring *self, PyObject *full_error)
{
    if (self->mirror != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "writer_init() was called already");
        return NULL;
    }
    if (ring_enter(self, 1) == NULL)
        return NULL;
    int fresh = a_load(word(self, self->head)) == 0 && a_load(word(self, self->bytes_total)) == 0;
    for (uint64_t i = 0; fresh && i < self->num_slots; i++)
        fresh = a_load(entry_word(self, i)) == 0;
    ring_leave(self);
    if (!fresh) {
        PyErr_SetString(PyExc_ValueError,
                        "writer_init() needs a fresh segment (head 0, no ring entry)");
        return NULL;
    }
    uint64_t *mirror = PyMem_Calloc(self->num_slots, sizeof(uint64_t));
    uint16_t *free_list = PyMem_Calloc(self->num_buffers, sizeof(uint16_t));
    uint16_t *held_list = PyMem_Calloc(self->num_buffers, sizeof(uint16_t));
    if (!mirror || !free_list || !held_list) {
        PyMem_Free(mirror);
        PyMem_Free(free_list);
        PyMem_Free(held_list);
        return PyErr_NoMemory();
    }
    for (uint64_t i = 0; i < self->num_buffers; i++)
        free_list[i] = (uint16_t)i;
    self->mirror = mirror;
    self->free_list = free_list;
    self->held_list = held_list;
    self->nfree = (Py_ssize_t)self->num_buffers;
    self->nheld = 0;
    self->w_head = 0;
    self->w_bytes = 0;
    self->loaned = -1;
    Py_INCREF(full_error);
    Py_XSETREF(self->full_error, full_error);
    Py_RETURN_NONE;
}

/* Pins the mapping for a writer method (see ring_enter); NULL with an exception if this Ring
 * is not the writer or the segment is closed. */
static char *
writer_enter(Ring *self)
{
    if (self->mirror == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "not the writer (call writer_init first)");
        return NULL;
    }
    return ring_enter(self, 1);
}

#define WRITER_FASTCALL(name)                                                             \
    static PyObject *name##_pinned(Ring *, char *, PyObject *const *, Py_ssize_t);        \
    static PyObject *name(Ring *self, PyObject *const *args, Py_ssize_t nargs)            \
    {                                                                                     \
        char *base = writer_enter(self);                                                  \
        if (base == NULL)                                                                 \
            return NULL;                                                                  \
        PyObject *result = name##_pinned(self, base, args, nargs);                        \
        ring_leave(self);                                                                 \
        return result;                                                                    \
    }

/* Whether a zero-copy reader holds buffer `index`: some row named in the holders word has
 * index + 1 in its held word. */
static int
is_held(Ring *self, uint64_t index)
{
    uint64_t holders = a_load(word(self, self->holders));
    for (uint64_t row = 0; holders && row < self->num_rows; row++, holders >>= 1) {
        if ((holders & 1) &&
            a_load(word(self, self->held_words + (Py_ssize_t)row * self->record_size)) ==
                index + 1)
            return 1;
    }
    return 0;
}

/* Gives back the held buffers whose readers let go of them. */
static void
collect_released(Ring *self)
{
    Py_ssize_t keep = 0;
    for (Py_ssize_t i = 0; i < self->nheld; i++) {
        uint16_t index = self->held_list[i];
        if (is_held(self, index))
            self->held_list[keep++] = index;
        else
            self->free_list[self->nfree++] = index;
    }
    self->nheld = keep;
}

/* A free buffer, fenced (as in RingWriter.reserve: our payload writes into it come after the
 * eviction that freed it, so a stale reader's re-check sees that); -1 with an exception. */
static long long
take_free(Ring *self)
{
    if (self->loaned >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "a buffer is reserved; commit or cancel it first");
        return -1;
    }
    if (self->nfree == 0)
        collect_released(self);
    if (self->nfree == 0) {
        PyErr_SetString(self->full_error,
                        "every data buffer is held by a zero-copy reader; this cannot happen "
                        "with well-behaved readers (is the segment corrupted?)");
        return -1;
    }
    a_fence();
    return self->free_list[--self->nfree];
}

static int
check_fits(Ring *self, uint64_t length)
{
    if (length > (uint64_t)self->slot_size) {
        PyErr_Format(PyExc_ValueError,
                     "message of %llu bytes does not fit in a slot of %zd bytes; create the "
                     "channel with slot_size >= %llu", (unsigned long long)length,
                     self->slot_size, (unsigned long long)length);
        return -1;
    }
    return 0;
}

static inline char *
payload_at(Ring *self, char *base, uint64_t index)
{
    return base + self->buffers + (Py_ssize_t)index * self->stride + BUFFER_HEADER_SIZE;
}

/* Publishes buffer `index` (payload written) as the next message: slot header, entry; then
 * (if publish_head) bytes_total and head, waking sleepers. The buffer the entry evicted goes
 * back to the free list unless a zero-copy reader holds it, which is checked after the entry
 * store: the hand-off with holders (they pin, then re-check the entry) needs that order.
 * Returns the message's sequence number. */
static uint64_t
publish(Ring *self, char *base, uint64_t index, uint64_t length, uint64_t encoding,
        uint64_t timestamp, int publish_head)
{
    uint64_t seq = self->w_head, slot = seq % self->num_slots;
    char *buf = payload_at(self, base, index) - BUFFER_HEADER_SIZE;
    wr_le64(buf, seq);
    wr_le64(buf + 8, timestamp);
    wr_le32(buf + 16, (uint32_t)length);
    buf[20] = (char)encoding;
    buf[21] = 0;
    uint64_t old = self->mirror[slot];
    uint64_t entry = ((seq + 1) << ENTRY_INDEX_BITS) | index;
    a_store(word(self, self->entries + 8 * (Py_ssize_t)slot), entry);
    self->mirror[slot] = entry;
    self->w_head = seq + 1;
    self->w_bytes += length;
    if (publish_head)
        publish_head_word(self);
    if (old) {
        uint16_t evicted = (uint16_t)(old & ENTRY_INDEX_MASK);
        if (is_held(self, evicted))
            self->held_list[self->nheld++] = evicted;
        else
            self->free_list[self->nfree++] = evicted;
    }
    if (self->nheld && !(seq & 15))
        collect_released(self);  /* every 16th message, and whenever the free list runs dry */
    return seq;
}

WRITER_FASTCALL(Ring_write)
static PyObject *
Ring_write_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t encoding, timestamp;
    CHECK_NARGS(3, "write");
    if (arg_u64(args[1], &encoding) < 0 || arg_u64(args[2], &timestamp) < 0)
        return NULL;
    Py_buffer payload;
    if (PyObject_GetBuffer(args[0], &payload, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    long long index = -1;
    if (check_fits(self, (uint64_t)payload.len) == 0)
        index = take_free(self);
    if (index < 0) {
        PyBuffer_Release(&payload);
        return NULL;
    }
    copy_payload(self, (uint64_t)index, payload_at(self, base, (uint64_t)index), payload.buf,
                 (size_t)payload.len);
    uint64_t length = (uint64_t)payload.len;
    PyBuffer_Release(&payload);
    return PyLong_FromUnsignedLongLong(
        publish(self, base, (uint64_t)index, length, encoding, timestamp, 1));
}

WRITER_FASTCALL(Ring_write_stamped)
static PyObject *
Ring_write_stamped_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t stamp_offset, encoding, timestamp;
    CHECK_NARGS(5, "write_stamped");
    if (arg_u64(args[2], &stamp_offset) < 0 || arg_u64(args[3], &encoding) < 0 ||
        arg_u64(args[4], &timestamp) < 0)
        return NULL;
    Py_buffer prefix, data;
    if (PyObject_GetBuffer(args[0], &prefix, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &data, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&prefix);
        return NULL;
    }
    PyObject *result = NULL;
    long long index = -1;
    if (prefix.len < 16 || stamp_offset > (uint64_t)(prefix.len - 16))
        PyErr_Format(PyExc_ValueError, "stamp offset %llu outside a prefix of %zd bytes",
                     (unsigned long long)stamp_offset, prefix.len);
    else if (check_fits(self, (uint64_t)prefix.len + (uint64_t)data.len) == 0)
        index = take_free(self);
    if (index >= 0) {
        char *dst = payload_at(self, base, (uint64_t)index);
        uint64_t seq = self->w_head;
        memcpy(dst, prefix.buf, (size_t)prefix.len);
        wr_le64(dst + stamp_offset, seq);
        wr_le64(dst + stamp_offset + 8, timestamp);
        copy_payload(self, (uint64_t)index, dst + prefix.len, data.buf, (size_t)data.len);
        result = PyLong_FromUnsignedLongLong(publish(
            self, base, (uint64_t)index, (uint64_t)(prefix.len + data.len), encoding, timestamp,
            1));
    }
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&data);
    return result;
}

/* write_many(payloads, encoding, timestamp_ns) -> count: all sizes are checked first (one
 * that does not fit: ValueError, nothing published); head is stored once, at the end. */
WRITER_FASTCALL(Ring_write_many)
static PyObject *
Ring_write_many_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t encoding, timestamp;
    CHECK_NARGS(3, "write_many");
    if (arg_u64(args[1], &encoding) < 0 || arg_u64(args[2], &timestamp) < 0)
        return NULL;
    PyObject *seq_obj = PySequence_Fast(args[0], "payloads must be a sequence");
    if (seq_obj == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq_obj);
    PyObject **items = PySequence_Fast_ITEMS(seq_obj);
    Py_buffer *views = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Py_buffer));
    Py_ssize_t got = 0, done = 0;
    int failed = views == NULL;
    if (failed)
        PyErr_NoMemory();
    for (; !failed && got < n; got++) {
        if (PyObject_GetBuffer(items[got], &views[got], PyBUF_C_CONTIGUOUS) < 0) {
            failed = 1;
            break;
        }
        if (check_fits(self, (uint64_t)views[got].len) < 0) {
            got++;  /* taken: released below */
            failed = 1;
            break;
        }
    }
    for (; !failed && done < n; done++) {
        long long index = take_free(self);
        if (index < 0) {
            failed = 1;
            break;
        }
        memcpy(payload_at(self, base, (uint64_t)index), views[done].buf, (size_t)views[done].len);
        publish(self, base, (uint64_t)index, (uint64_t)views[done].len, encoding, timestamp, 0);
    }
    if (done)
        publish_head_word(self);  /* what went out (all of it, unless we failed) */
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_DECREF(seq_obj);
    return failed ? NULL : PyLong_FromSsize_t(done);
}

/* reserve() -> index: a free buffer for the caller to fill in place (loan). */
static PyObject *
Ring_reserve(Ring *self, PyObject *unused)
{
    if (writer_enter(self) == NULL)
        return NULL;
    long long index = -1;
    if (self->loaned >= 0)
        PyErr_SetString(PyExc_RuntimeError,
                        "a buffer is already reserved; commit or cancel it first");
    else
        index = take_free(self);
    ring_leave(self);
    if (index < 0)
        return NULL;
    self->loaned = index;
    return PyLong_FromLongLong(index);
}

static int
check_loaned(Ring *self, PyObject *arg, uint64_t *index)
{
    if (arg_u64(arg, index) < 0)
        return -1;
    if (self->loaned < 0 || (uint64_t)self->loaned != *index) {
        PyErr_Format(PyExc_RuntimeError, "buffer %llu is not the reserved one",
                     (unsigned long long)*index);
        return -1;
    }
    return 0;
}

/* cancel(index): give the reserved buffer back unpublished (this touches only our private
 * lists, so it works after a close too: a loan's with-block that raised can always end). */
static PyObject *
Ring_cancel(Ring *self, PyObject *arg)
{
    uint64_t index;
    if (self->mirror == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "not the writer (call writer_init first)");
        return NULL;
    }
    if (check_loaned(self, arg, &index) < 0)
        return NULL;
    self->loaned = -1;
    self->free_list[self->nfree++] = (uint16_t)index;
    Py_RETURN_NONE;
}

/* commit(index, length, encoding, timestamp_ns) -> seq: publish the reserved buffer. */
WRITER_FASTCALL(Ring_commit)
static PyObject *
Ring_commit_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t index, length, encoding, timestamp;
    CHECK_NARGS(4, "commit");
    if (check_loaned(self, args[0], &index) < 0 || arg_u64(args[1], &length) < 0 ||
        arg_u64(args[2], &encoding) < 0 || arg_u64(args[3], &timestamp) < 0)
        return NULL;
    if (length > (uint64_t)self->slot_size) {
        PyErr_Format(PyExc_ValueError, "length %llu outside 0..%zd", (unsigned long long)length,
                     self->slot_size);
        return NULL;
    }
    self->loaned = -1;
    return PyLong_FromUnsignedLongLong(publish(self, base, index, length, encoding, timestamp, 1));
}

static PyObject *
Ring_get_head(Ring *self, void *closure)
{
    if (self->mirror)
        return PyLong_FromUnsignedLongLong(self->w_head);
    if (ring_enter(self, 0) == NULL)
        return NULL;
    uint64_t head = a_load(word(self, self->head));
    ring_leave(self);
    return PyLong_FromUnsignedLongLong(head);
}

static PyObject *
Ring_get_bytes_total(Ring *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->w_bytes);
}

static PyObject *
Ring_get_free_buffers(Ring *self, void *closure)
{
    if (writer_enter(self) == NULL)
        return NULL;
    collect_released(self);
    ring_leave(self);
    return PyLong_FromSsize_t(self->nfree);
}

static PyObject *
Ring_get_held_buffers(Ring *self, void *closure)
{
    PyObject *out = PyList_New(self->mirror ? self->nheld : 0);
    for (Py_ssize_t i = 0; out != NULL && self->mirror && i < self->nheld; i++)
        PyList_SET_ITEM(out, i, PyLong_FromLong(self->held_list[i]));
    return out;
}

/* Where message `seq` sits if its entry says it is intact so far: returns its buffer and
 * fills *length, or NULL (no exception) if the entry or the length is not what we expect. */
static const char *
locate(Ring *self, char *base, uint64_t seq, uint64_t *entry_out, uint32_t *length)
{
    uint64_t entry = a_load(entry_word(self, seq));
    uint64_t index = entry & ENTRY_INDEX_MASK;
    if ((entry >> ENTRY_INDEX_BITS) - 1 != seq || index >= self->num_buffers)
        return NULL;
    const char *buf = base + self->buffers + (Py_ssize_t)index * self->stride;
    *length = rd_le32(buf + 16);
    if (*length > (uint64_t)self->slot_size)
        return NULL;
    *entry_out = entry;
    return buf;
}

/* Batch reads ask the CPU for message seq + PREFETCH_AHEAD's lines while they copy seq: its
 * slot header and the first `payload` bytes of its payload (the buffer named by its entry as
 * it is now; a stale guess only wastes the prefetch). The lines come from the writer's core,
 * so overlapping their transfers is most of a batch's speed. */
#define PREFETCH_AHEAD 16

static inline void
prefetch_message(Ring *self, const char *base, uint64_t seq, size_t payload)
{
#if defined(__GNUC__)
    uint64_t entry = a_load(word(self, self->entries + 8 * (Py_ssize_t)(seq % self->num_slots)));
    uint64_t index = entry & ENTRY_INDEX_MASK;
    if (index >= self->num_buffers)
        return;
    const char *buf = base + self->buffers + (Py_ssize_t)index * self->stride;
    size_t end = BUFFER_HEADER_SIZE + (payload < 192 ? payload : 192);
    for (size_t line = 0; line < end; line += 64)
        __builtin_prefetch(buf + line, 0, 3);
#else
    (void)self; (void)base; (void)seq; (void)payload;
#endif
}

/* ---- the readers: the common case only; ring.py's careful path handles the rest ---- */

/* The reader check, the one place that says whether copies are intact (docs/design.md,
 * "Stale readers"): messages start .. start + count - 1 were copied from the buffers their
 * entries named when we loaded them, entries[0 .. count - 1]. One full fence (our copies
 * before the loads below), then their entries again, newest first. The writer fences after
 * evicting a buffer and before writing into it, so if a copy may hold any of its new bytes,
 * that message's entry has changed; and eviction goes in sequence order, so the copies whose
 * entries are unchanged are a suffix. Returns its first index: copies first .. count - 1 are
 * intact, 0 .. first - 1 are to be discarded (they are counted in self->torn). */
static uint64_t
intact_from(Ring *self, uint64_t start, const uint64_t *entries, uint64_t count)
{
    a_fence();
    uint64_t first = count;
    while (first > 0 && a_load(entry_word(self, start + first - 1)) == entries[first - 1])
        first--;
    self->torn += first;
    return first;
}

/* intact(seq, entry) -> bool: the reader check for ring.py's careful path, after it copied
 * message seq from the buffer that `entry` named. */
PINNED_FASTCALL(Ring_intact, 0)
static PyObject *
Ring_intact_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t seq, entry;
    CHECK_NARGS(2, "intact");
    if (arg_u64(args[0], &seq) < 0 || arg_u64(args[1], &entry) < 0)
        return NULL;
    return PyBool_FromLong(intact_from(self, seq, &entry, 1) == 0);
}

/* counters() -> (head, bytes_total) | None: the two counters as one pair, bytes_total
 * counting exactly the head messages. The writer stores a message's entry, then bytes_total,
 * then head. A bytes_total unchanged around the load of head, with no entry yet for message
 * head, is a pair from between two publishes (seq-cst loads: none moves past another). A
 * writer that publishes every few hundred nanoseconds moves on between two loads from
 * Python, so the tries run here, back to back; None if they all met a writer between its
 * stores (preempted there, or dead there: the caller waits a little, then takes what is). */
PINNED_FASTCALL(Ring_counters, 0)
static PyObject *
Ring_counters_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_NARGS(0, "counters");
    for (int attempt = 0; attempt < 4096; attempt++) {
        uint64_t data = a_load(word(self, self->bytes_total));
        uint64_t head = a_load(word(self, self->head));
        uint64_t entry = a_load(entry_word(self, head));
        if (entry >> ENTRY_INDEX_BITS <= head && a_load(word(self, self->bytes_total)) == data)
            return Py_BuildValue("(KK)", (unsigned long long)head, (unsigned long long)data);
    }
    Py_RETURN_NONE;
}

/* Parses take()'s (cursor, rec_cursor) arguments; -1 with an exception if they are bad. */
static int
take_args(Ring *self, PyObject *const *args, uint64_t *cursor, Py_ssize_t *rec_cursor)
{
    if (arg_u64(args[0], cursor) < 0)
        return -1;
    *rec_cursor = PyLong_AsSsize_t(args[1]);
    if (*rec_cursor == -1 && PyErr_Occurred())
        return -1;
    if (*rec_cursor >= 0 && (*rec_cursor > self->atom->view.len - 8 || *rec_cursor % 8 != 0 ||
                             self->atom->view.readonly)) {
        PyErr_Format(PyExc_ValueError, "bad cursor word offset %zd", *rec_cursor);
        return -1;
    }
    return 0;
}

static PyObject *
do_take(Ring *self, char *base, uint64_t cursor, Py_ssize_t rec_cursor)
{
    uint64_t entry;
    uint32_t length;
    uint64_t head = a_load(word(self, self->head));
    if (cursor >= head)
        Py_RETURN_NONE;
    if (head - cursor > self->num_slots)
        Py_RETURN_FALSE;
    const char *buf = locate(self, base, cursor, &entry, &length);
    if (buf == NULL)
        Py_RETURN_FALSE;
    uint64_t timestamp = rd_le64(buf + 8);
    long encoding = (unsigned char)buf[20];
    PyObject *data = PyBytes_FromStringAndSize(buf + BUFFER_HEADER_SIZE, length);
    if (data == NULL)
        return NULL;
    if (intact_from(self, cursor, &entry, 1) != 0) {
        Py_DECREF(data);
        Py_RETURN_FALSE;
    }
    if (rec_cursor >= 0)
        a_store(word(self, rec_cursor), cursor + 1);
    PyObject *result = PyTuple_New(4);
    PyObject *enc = PyLong_FromLong(encoding);
    PyObject *ts = PyLong_FromUnsignedLongLong(timestamp);
    PyObject *seq = PyLong_FromUnsignedLongLong(cursor);
    if (result == NULL || enc == NULL || ts == NULL || seq == NULL) {
        Py_XDECREF(result);
        Py_XDECREF(enc);
        Py_XDECREF(ts);
        Py_XDECREF(seq);
        Py_DECREF(data);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, data);
    PyTuple_SET_ITEM(result, 1, enc);
    PyTuple_SET_ITEM(result, 2, ts);
    PyTuple_SET_ITEM(result, 3, seq);
    return result;
}

/* take(cursor, rec_cursor) -> (payload, encoding, timestamp_ns, seq) | None | False
 * None: nothing new. False: not the common case; use ring.py's careful path. On success the
 * new cursor is stored at offset rec_cursor (unless it is negative: an observer). */
PINNED_FASTCALL(Ring_take, 0)
static PyObject *
Ring_take_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t cursor;
    Py_ssize_t rec_cursor;
    CHECK_NARGS(2, "take");
    if (take_args(self, args, &cursor, &rec_cursor) < 0)
        return NULL;
    return do_take(self, base, cursor, rec_cursor);
}

/* take_wait(cursor, rec_cursor, bit, closed, timeout) -> as take()
 * A blocking receive's whole step: take(); if nothing is there, wait_past() on this ring's
 * head/waiters/doorbell (announcing `bit`; `closed` is the closed word's offset) for at most
 * timeout seconds, then take() again. Nothing runs in Python between the wake-up and the
 * copy. None: still nothing (a slice ended, or the channel was closed or retired).
 * SHMClosedError: this end was closed (by another thread) while it slept. */
PINNED_FASTCALL(Ring_take_wait, 0)
static PyObject *
Ring_take_wait_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t cursor, bit;
    Py_ssize_t rec_cursor;
    CHECK_NARGS(5, "take_wait");
    if (take_args(self, args, &cursor, &rec_cursor) < 0 || arg_u64(args[2], &bit) < 0)
        return NULL;
    Py_ssize_t closed = PyLong_AsSsize_t(args[3]);
    double timeout = PyFloat_AsDouble(args[4]);
    if ((closed == -1 || timeout == -1.0) && PyErr_Occurred())
        return NULL;
    if (closed < 0 || closed > self->atom->view.len - 8 || closed % 8 != 0 ||
        (bit && self->atom->view.readonly)) {
        PyErr_SetString(PyExc_ValueError, "bad closed word offset, or a read-only announcer");
        return NULL;
    }
    PyObject *got = do_take(self, base, cursor, rec_cursor);
    if (got != Py_None)
        return got;
    Py_DECREF(got);
    /* On return the buffer is still ours: a close meanwhile makes this fail. */
    if (shmc_sleep_past(self->atom, word(self, self->head), cursor, word(self, self->waiters),
                        bit, word(self, closed), word(self, self->doorbell), timeout) < 0)
        return NULL;
    return do_take(self, base, cursor, rec_cursor);
}

/* Whether payload starts with expect[0:size] apart from the 16 bytes at stamp_offset (the
 * seq and timestamp that publish_stamped writes there). An empty expect matches anything. */
static int
prefix_matches(const char *payload, const char *expect, Py_ssize_t size, Py_ssize_t stamp_offset)
{
    if (size == 0)
        return 1;
    if (size < 16 || stamp_offset < 0 || stamp_offset > size - 16)
        return 0;
    return memcmp(payload, expect, (size_t)stamp_offset) == 0 &&
           memcmp(payload + stamp_offset + 16, expect + stamp_offset + 16,
                  (size_t)(size - stamp_offset - 16)) == 0;
}

/* hold(cursor, rec_held, rec_cursor, expect, stamp_offset, expect_length)
 *     -> (seq, buffer, payload_offset, length, encoding, timestamp_ns, matches) | None | False
 * A zero-copy reader's step: pin message `cursor` by storing its buffer + 1 at offset
 * rec_held, then re-check the entry (the writer, having stored a new entry, checks the held
 * words: seq_cst on both sides means one of us sees the other; no copy, so no fence: a
 * changed entry counts in self->torn like a discarded copy). The pin replaces this
 * reader's previous one; None (nothing new) and False (not the common case: use ring.py's
 * careful path) leave it unpinned. On success the message counts as taken: cursor + 1 is
 * stored at rec_cursor. `matches`: the payload is expect_length bytes long and begins with
 * `expect` except for the 16 bytes at stamp_offset (a message of publish_stamped(expect, ...)):
 * how a typed channel checks a fixed-shape array header in one step. */
PINNED_FASTCALL(Ring_hold, 1)
static PyObject *
Ring_hold_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t cursor, entry;
    uint32_t length;
    CHECK_NARGS(6, "hold");
    if (arg_u64(args[0], &cursor) < 0)
        return NULL;
    if (!PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "expect must be bytes");
        return NULL;
    }
    const char *expect = PyBytes_AS_STRING(args[3]);
    Py_ssize_t expect_size = PyBytes_GET_SIZE(args[3]);
    Py_ssize_t stamp_offset = PyLong_AsSsize_t(args[4]);
    Py_ssize_t expect_length = PyLong_AsSsize_t(args[5]);
    if ((stamp_offset == -1 || expect_length == -1) && PyErr_Occurred())
        return NULL;
    Py_ssize_t rec_held = PyLong_AsSsize_t(args[1]);
    Py_ssize_t rec_cursor = PyLong_AsSsize_t(args[2]);
    if ((rec_held == -1 || rec_cursor == -1) && PyErr_Occurred())
        return NULL;
    Py_ssize_t words[] = {rec_held, rec_cursor};
    for (int i = 0; i < 2; i++) {
        if (words[i] < 0 || words[i] > self->atom->view.len - 8 || words[i] % 8 != 0) {
            PyErr_Format(PyExc_ValueError, "bad record word offset %zd", words[i]);
            return NULL;
        }
    }
    volatile uint64_t *held = word(self, rec_held);
    uint64_t head = a_load(word(self, self->head));
    if (cursor >= head || head - cursor > self->num_slots) {
        a_store(held, 0);
        if (cursor >= head)
            Py_RETURN_NONE;
        Py_RETURN_FALSE;
    }
    volatile uint64_t *entry_at = entry_word(self, cursor);
    entry = a_load(entry_at);
    uint64_t index = entry & ENTRY_INDEX_MASK;
    if ((entry >> ENTRY_INDEX_BITS) - 1 != cursor || index >= self->num_buffers) {
        a_store(held, 0);
        Py_RETURN_FALSE;
    }
    a_store(held, index + 1);
    if (a_load(entry_at) != entry) {
        a_store(held, 0);
        self->torn++;
        Py_RETURN_FALSE;
    }
    const char *buf = base + self->buffers + (Py_ssize_t)index * self->stride;
    length = rd_le32(buf + 16);
    if (length > (uint64_t)self->slot_size) {
        a_store(held, 0);
        Py_RETURN_FALSE;
    }
    a_store(word(self, rec_cursor), cursor + 1);
    const char *payload = buf + BUFFER_HEADER_SIZE;
    int matches = (Py_ssize_t)length == expect_length && expect_length >= expect_size &&
                  prefix_matches(payload, expect, expect_size, stamp_offset);
    return Py_BuildValue("(KKnkBKN)", (unsigned long long)cursor, (unsigned long long)index,
                         (Py_ssize_t)(payload - base), (unsigned long)length,
                         (unsigned char)buf[20], (unsigned long long)rd_le64(buf + 8),
                         PyBool_FromLong(matches));
}

/* gather(start, n, out, stamps, data_offset, item_size, encoding, expect, stamp_offset)
 *     -> (first, count)
 * The batch read of a fixed-size stream into caller-owned arrays: message start + i goes to
 * out[i * item_size:] (its payload bytes data_offset .. data_offset + item_size) and its
 * timestamp to stamps[i] (native u64), for as long as messages are there intact, have
 * exactly data_offset + item_size bytes and encoding `encoding`, and start with `expect`
 * (as for hold; an empty expect matches anything). At most n and num_slots messages. Then
 * the reader check: the valid copies are first .. count - 1 (the caller counts the earlier
 * ones as dropped and stores the cursor). */
PINNED_FASTCALL(Ring_gather, 0)
static PyObject *
Ring_gather_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t start, n, encoding;
    CHECK_NARGS(9, "gather");
    if (arg_u64(args[0], &start) < 0 || arg_u64(args[1], &n) < 0 ||
        arg_u64(args[6], &encoding) < 0)
        return NULL;
    Py_ssize_t data_offset = PyLong_AsSsize_t(args[4]);
    Py_ssize_t item_size = PyLong_AsSsize_t(args[5]);
    Py_ssize_t stamp_offset = PyLong_AsSsize_t(args[8]);
    if ((data_offset == -1 || item_size == -1 || stamp_offset == -1) && PyErr_Occurred())
        return NULL;
    if (!PyBytes_Check(args[7])) {
        PyErr_SetString(PyExc_TypeError, "expect must be bytes");
        return NULL;
    }
    const char *expect = PyBytes_AS_STRING(args[7]);
    Py_ssize_t expect_size = PyBytes_GET_SIZE(args[7]);
    if (data_offset < 0 || item_size < 0 || data_offset > self->slot_size ||
        item_size > self->slot_size - data_offset || expect_size > data_offset + item_size) {
        PyErr_SetString(PyExc_ValueError, "bad data_offset/item_size/expect");
        return NULL;
    }
    if (n > self->num_slots)
        n = self->num_slots;
    Py_buffer out, stamps;
    if (PyObject_GetBuffer(args[2], &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[3], &stamps, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&out);
        return NULL;
    }
    PyObject *result = NULL;
    uint64_t *entries = NULL;
    if (item_size > 0 && (uint64_t)(out.len / item_size) < n)
        n = (uint64_t)(out.len / item_size);
    if ((uint64_t)(stamps.len / 8) < n)
        n = (uint64_t)(stamps.len / 8);
    entries = PyMem_Malloc(sizeof(uint64_t) * (n ? n : 1));
    if (entries == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint64_t want = (uint64_t)(data_offset + item_size), count = 0, entry;
    uint32_t length;
    char *dst = (char *)out.buf;
    for (; count < n; count++) {
        if (count + PREFETCH_AHEAD < n)
            prefetch_message(self, base, start + count + PREFETCH_AHEAD, (size_t)want);
        const char *buf = locate(self, base, start + count, &entry, &length);
        if (buf == NULL || length != want || (unsigned char)buf[20] != encoding)
            break;
        const char *payload = buf + BUFFER_HEADER_SIZE;
        if (!prefix_matches(payload, expect, expect_size, stamp_offset))
            break;
        memcpy(dst + count * (uint64_t)item_size, payload + data_offset, (size_t)item_size);
        uint64_t stamp = rd_le64(buf + 8);
        memcpy((char *)stamps.buf + 8 * count, &stamp, 8);
        entries[count] = entry;
    }
    uint64_t first = intact_from(self, start, entries, count);
    result = Py_BuildValue("(KK)", (unsigned long long)first, (unsigned long long)count);
done:
    PyMem_Free(entries);
    PyBuffer_Release(&out);
    PyBuffer_Release(&stamps);
    return result;
}

/* take_many(start, n) -> (first, payloads, encodings)
 * Copies messages start, start + 1, ... (at most n, at most num_slots), stopping at the first
 * that is not there intact; then the reader check keeps the copies whose entries did not
 * change, a suffix: payloads/encodings are messages start + first onwards. Nothing copied
 * gives (0, [], []). The caller stores the cursor and counts messages start .. start +
 * first - 1 as dropped. */
PINNED_FASTCALL(Ring_take_many, 0)
static PyObject *
Ring_take_many_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t start, n, entry;
    uint32_t length;
    CHECK_NARGS(2, "take_many");
    if (arg_u64(args[0], &start) < 0 || arg_u64(args[1], &n) < 0)
        return NULL;
    if (n > self->num_slots)
        n = self->num_slots;
    PyObject *payloads = PyList_New((Py_ssize_t)n);
    PyObject *encodings = PyList_New((Py_ssize_t)n);
    uint64_t *entries = PyMem_Malloc(sizeof(uint64_t) * (n ? n : 1));
    if (payloads == NULL || encodings == NULL || entries == NULL)
        goto fail;
    uint64_t count = 0;
    for (; count < n; count++) {
        if (count + PREFETCH_AHEAD < n)
            prefetch_message(self, base, start + count + PREFETCH_AHEAD, 64);
        const char *buf = locate(self, base, start + count, &entry, &length);
        if (buf == NULL)
            break;
        PyObject *data = PyBytes_FromStringAndSize(buf + BUFFER_HEADER_SIZE, length);
        PyObject *enc = PyLong_FromLong((unsigned char)buf[20]);
        if (data == NULL || enc == NULL) {
            Py_XDECREF(data);
            Py_XDECREF(enc);
            goto fail;
        }
        PyList_SET_ITEM(payloads, (Py_ssize_t)count, data);
        PyList_SET_ITEM(encodings, (Py_ssize_t)count, enc);
        entries[count] = entry;
    }
    uint64_t first = intact_from(self, start, entries, count);
    PyMem_Free(entries);
    entries = NULL;
    /* Unfilled tail items are NULL, which list slicing handles (they are never exposed). */
    if (PyList_SetSlice(payloads, (Py_ssize_t)count, (Py_ssize_t)n, NULL) < 0 ||
        PyList_SetSlice(encodings, (Py_ssize_t)count, (Py_ssize_t)n, NULL) < 0 ||
        PyList_SetSlice(payloads, 0, (Py_ssize_t)first, NULL) < 0 ||
        PyList_SetSlice(encodings, 0, (Py_ssize_t)first, NULL) < 0)
        goto fail;
    PyObject *result = Py_BuildValue("(KNN)", (unsigned long long)first, payloads, encodings);
    if (result == NULL) {
        payloads = encodings = NULL;  /* "N" stole them even on failure */
        goto fail;
    }
    return result;
fail:
    Py_XDECREF(payloads);
    Py_XDECREF(encodings);
    PyMem_Free(entries);
    return NULL;
}

/* ---- blocking sends: is there room for the next `count` messages? ---- */

/* watch_cursors(membership, rec_state, rec_cursor, active_code): where the membership
 * counter is, and row 0's state and cursor words (row r's are record_size * r further on);
 * a row whose state's low byte is active_code is a reader that has_room() waits for. */
static PyObject *
Ring_watch_cursors(Ring *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t active;
    CHECK_NARGS(4, "watch_cursors");
    if (writer_enter(self) == NULL)
        return NULL;
    ring_leave(self);  /* (only the writer check: nothing is read here) */
    if (arg_u64(args[3], &active) < 0)
        return NULL;
    Py_ssize_t words[3];
    for (int i = 0; i < 3; i++) {
        words[i] = PyLong_AsSsize_t(args[i]);
        if (words[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    Py_ssize_t len = self->atom->view.len, last = self->record_size * (Py_ssize_t)
        (self->num_rows ? self->num_rows - 1 : 0);
    if (words[0] < 0 || words[0] > len - 8 || words[0] % 8 != 0 ||
        words[1] < 0 || words[1] % 8 != 0 || words[1] > len - 8 - last ||
        words[2] < 0 || words[2] % 8 != 0 || words[2] > len - 8 - last) {
        PyErr_SetString(PyExc_ValueError, "membership/state/cursor words outside the buffer");
        return NULL;
    }
    self->membership = words[0];
    self->rec_state = words[1];
    self->rec_cursor = words[2];
    self->active_code = active & 0xFF;
    self->room_membership = UINT64_MAX;  /* nothing cached yet */
    self->room_bound = 0;
    self->watching = 1;
    Py_RETURN_NONE;
}

/* Whether `count` more messages evict nothing that an active reader has not taken yet.
 * Cursors only grow, so the lowest cursor seen stays a safe bound until a reader joins or
 * leaves (membership changes); only then, or when the bound no longer leaves room, are the
 * rows read again. Membership is loaded before the rows: a reader joining during the scan
 * bumps it afterwards, so the next call scans again. */
static int
room_for(Ring *self, uint64_t count)
{
    uint64_t head = self->w_head;
    uint64_t membership = a_load(word(self, self->membership));
    if (membership == self->room_membership && head - self->room_bound + count <= self->num_slots)
        return 1;
    uint64_t lowest = head;
    for (uint64_t row = 0; row < self->num_rows; row++) {
        Py_ssize_t rec = (Py_ssize_t)row * self->record_size;
        if ((a_load(word(self, self->rec_state + rec)) & 0xFF) == self->active_code) {
            uint64_t cursor = a_load(word(self, self->rec_cursor + rec));
            if (cursor < lowest)
                lowest = cursor;
        }
    }
    self->room_membership = membership;
    self->room_bound = lowest;
    return head - lowest + count <= self->num_slots;
}

static int
check_watching(Ring *self)
{
    if (!self->watching) {
        PyErr_SetString(PyExc_RuntimeError, "call watch_cursors() first");
        return -1;
    }
    return 0;
}

/* has_room(count) -> bool */
static PyObject *
Ring_has_room(Ring *self, PyObject *arg)
{
    uint64_t count;
    if (check_watching(self) < 0 || arg_u64(arg, &count) < 0 || writer_enter(self) == NULL)
        return NULL;
    int room = room_for(self, count);
    ring_leave(self);
    return PyBool_FromLong(room);
}

/* write_if_room(payload, encoding, timestamp_ns) -> seq | None: write() if the message
 * evicts nothing an active reader has not taken, else None (the caller waits and retries):
 * a blocking send's common case in the same single call as a non-blocking one. */
WRITER_FASTCALL(Ring_write_if_room)
static PyObject *
Ring_write_if_room_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_NARGS(3, "write_if_room");
    if (check_watching(self) < 0)
        return NULL;
    if (!room_for(self, 1))
        Py_RETURN_NONE;
    return Ring_write_pinned(self, base, args, nargs);
}

/* commit_stamped(index, length, encoding, timestamp_ns, prefix, stamp_offset) -> seq: write
 * `prefix` at the start of the reserved buffer's payload with the message's seq and
 * timestamp as u64s at stamp_offset in it, then publish it as commit() does. A loan's whole
 * exit in one call: the typed-array header goes in while the caller's data is already there. */
WRITER_FASTCALL(Ring_commit_stamped)
static PyObject *
Ring_commit_stamped_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t index, length, encoding, timestamp, stamp_offset;
    CHECK_NARGS(6, "commit_stamped");
    if (check_loaned(self, args[0], &index) < 0 || arg_u64(args[1], &length) < 0 ||
        arg_u64(args[2], &encoding) < 0 || arg_u64(args[3], &timestamp) < 0 ||
        arg_u64(args[5], &stamp_offset) < 0)
        return NULL;
    Py_buffer prefix;
    if (PyObject_GetBuffer(args[4], &prefix, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (length > (uint64_t)self->slot_size || (uint64_t)prefix.len > length ||
        prefix.len < 16 || stamp_offset > (uint64_t)(prefix.len - 16)) {
        PyErr_Format(PyExc_ValueError, "length %llu, prefix of %zd bytes or stamp offset %llu "
                     "do not fit a slot of %zd bytes", (unsigned long long)length, prefix.len,
                     (unsigned long long)stamp_offset, self->slot_size);
        PyBuffer_Release(&prefix);
        return NULL;
    }
    char *dst = payload_at(self, base, index);
    memcpy(dst, prefix.buf, (size_t)prefix.len);
    PyBuffer_Release(&prefix);
    wr_le64(dst + stamp_offset, self->w_head);
    wr_le64(dst + stamp_offset + 8, timestamp);
    self->loaned = -1;
    return PyLong_FromUnsignedLongLong(publish(self, base, index, length, encoding, timestamp, 1));
}

/* slot(index) -> (timestamp_ns, length, encoding): buffer index's slot header as it is now
 * (for ring.py's careful path, which decides what a length says only after the reader
 * check). */
PINNED_FASTCALL(Ring_slot, 0)
static PyObject *
Ring_slot_pinned(Ring *self, char *base, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t index;
    CHECK_NARGS(1, "slot");
    if (arg_u64(args[0], &index) < 0)
        return NULL;
    if (index >= self->num_buffers) {
        PyErr_Format(PyExc_IndexError, "buffer %llu of %llu", (unsigned long long)index,
                     (unsigned long long)self->num_buffers);
        return NULL;
    }
    const char *buf = base + self->buffers + (Py_ssize_t)index * self->stride;
    return Py_BuildValue("(KkB)", (unsigned long long)rd_le64(buf + 8),
                         (unsigned long)rd_le32(buf + 16), (unsigned char)buf[20]);
}

static PyObject *
Ring_get_torn(Ring *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->torn);
}

static PyMethodDef Ring_methods[] = {
    {"writer_init", (PyCFunction)Ring_writer_init, METH_O,
     "writer_init(full_error): become the writer (free list from the ring entries)."},
    {"write", (PyCFunction)(void (*)(void))Ring_write, METH_FASTCALL,
     "write(payload, encoding, timestamp_ns) -> seq: copy and publish one message."},
    {"write_stamped", (PyCFunction)(void (*)(void))Ring_write_stamped, METH_FASTCALL,
     "write_stamped(prefix, data, stamp_offset, encoding, timestamp_ns) -> seq: publish "
     "prefix + data with seq and timestamp stored at stamp_offset."},
    {"write_many", (PyCFunction)(void (*)(void))Ring_write_many, METH_FASTCALL,
     "write_many(payloads, encoding, timestamp_ns) -> count: head stored once."},
    {"reserve", (PyCFunction)Ring_reserve, METH_NOARGS, "reserve() -> index (for a loan)."},
    {"cancel", (PyCFunction)Ring_cancel, METH_O, "cancel(index): unreserve, publish nothing."},
    {"commit", (PyCFunction)(void (*)(void))Ring_commit, METH_FASTCALL,
     "commit(index, length, encoding, timestamp_ns) -> seq: publish the reserved buffer."},
    {"take", (PyCFunction)(void (*)(void))Ring_take, METH_FASTCALL,
     "take(cursor, rec_cursor) -> (payload, encoding, timestamp_ns, seq) | None | False."},
    {"take_wait", (PyCFunction)(void (*)(void))Ring_take_wait, METH_FASTCALL,
     "take_wait(cursor, rec_cursor, bit, closed, timeout) -> as take(), sleeping first if "
     "nothing is there."},
    {"hold", (PyCFunction)(void (*)(void))Ring_hold, METH_FASTCALL,
     "hold(cursor, rec_held, rec_cursor, expect, stamp_offset, expect_length) -> (seq, buffer, "
     "payload_offset, length, encoding, timestamp_ns, matches) | None | False."},
    {"gather", (PyCFunction)(void (*)(void))Ring_gather, METH_FASTCALL,
     "gather(start, n, out, stamps, data_offset, item_size, encoding, expect, stamp_offset) -> "
     "(first, count): batch read of fixed-size messages into caller-owned arrays."},
    {"take_many", (PyCFunction)(void (*)(void))Ring_take_many, METH_FASTCALL,
     "take_many(start, n) -> (first, payloads, encodings)."},
    {"watch_cursors", (PyCFunction)(void (*)(void))Ring_watch_cursors, METH_FASTCALL,
     "watch_cursors(membership, rec_state, rec_cursor, active_code): where has_room() looks."},
    {"has_room", (PyCFunction)Ring_has_room, METH_O,
     "has_room(count) -> bool: count more messages evict nothing an active reader needs."},
    {"write_if_room", (PyCFunction)(void (*)(void))Ring_write_if_room, METH_FASTCALL,
     "write_if_room(payload, encoding, timestamp_ns) -> seq | None: write() if has_room(1)."},
    {"commit_stamped", (PyCFunction)(void (*)(void))Ring_commit_stamped, METH_FASTCALL,
     "commit_stamped(index, length, encoding, timestamp_ns, prefix, stamp_offset) -> seq: "
     "write the prefix with seq and timestamp, then publish the reserved buffer."},
    {"slot", (PyCFunction)(void (*)(void))Ring_slot, METH_FASTCALL,
     "slot(index) -> (timestamp_ns, length, encoding): a buffer's slot header."},
    {"intact", (PyCFunction)(void (*)(void))Ring_intact, METH_FASTCALL,
     "intact(seq, entry) -> bool: the reader check after copying message seq from the buffer "
     "that entry named (False: discard the copy)."},
    {"counters", (PyCFunction)(void (*)(void))Ring_counters, METH_FASTCALL,
     "counters() -> (head, bytes_total) as one pair, or None while a writer is between its "
     "stores."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Ring_getset[] = {
    {"head", (getter)Ring_get_head, NULL, "messages published (the writer's count)", NULL},
    {"bytes_total", (getter)Ring_get_bytes_total, NULL, "payload bytes published", NULL},
    {"free_buffers", (getter)Ring_get_free_buffers, NULL, "buffers ready for a message", NULL},
    {"held_buffers", (getter)Ring_get_held_buffers, NULL, "evicted buffers still pinned", NULL},
    {"torn", (getter)Ring_get_torn, NULL,
     "reads the reader check discarded: the writer overwrote the message during the read",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shm_comm._atomic.Ring",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The ring's per-message hot paths over an AtomicBuffer (see ring.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Ring_init,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = Ring_methods,
    .tp_getset = Ring_getset,
};

int
shmc_add_ring_type(PyObject *module)
{
    if (PyType_Ready(&RingType) < 0)
        return -1;
    Py_INCREF(&RingType);
    if (PyModule_AddObject(module, "Ring", (PyObject *)&RingType) < 0) {
        Py_DECREF(&RingType);
        return -1;
    }
    return 0;
}
