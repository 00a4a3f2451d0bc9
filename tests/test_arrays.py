"""Typed NumPy channels in one process: shapes, dtypes, views, loans, batches, bad input.

Cross-process behaviour (views that never change under a fast writer, closing with live views,
killed holders) is in test_processes.py and test_faults.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from shm_comm import (
    ArrayPublisher,
    ArraySubscriber,
    Publisher,
    SHMFormatError,
    SHMSerializationError,
    Subscriber,
    decode_array,
)
from shm_comm import layout as L

JOINT = np.dtype([("t", "<f8"), ("q", "<f4", (6,))])


def test_fixed_shape_round_trip_with_views_and_metadata(channel: str) -> None:
    with ArrayPublisher(channel, shape=(480, 640, 3), dtype=np.uint8, num_slots=4) as pub, \
            ArraySubscriber(channel) as sub:
        assert (sub.dtype, sub.shape, sub.fixed_shape) == (np.dtype(np.uint8), (480, 640, 3), True)
        assert sub.recv(timeout=0) is None
        frame = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        pub.send(frame)
        got = sub.recv(timeout=2)
        assert got is not None
        np.testing.assert_array_equal(got, frame)
        assert got.flags.writeable is False
        with pytest.raises(ValueError):
            got.flags.writeable = True
        assert got.base is not None  # a view of shared memory, not a copy
        assert sub.last_seq == 0
        assert sub.last_timestamp is not None
        copy = None
        pub.send(frame + 1)
        copy = sub.recv(timeout=2, copy=True)
        assert copy is not None
        assert copy.flags.writeable
        np.testing.assert_array_equal(copy, frame + 1)
        assert sub.last_seq == 1


@pytest.mark.parametrize("dtype", [np.float64, ">i4", "<u2", JOINT, "S7", np.complex64, bool])
def test_any_fixed_size_dtype_including_structured_and_byte_order(channel: str, dtype: object
                                                                   ) -> None:
    dt = np.dtype(dtype)  # type: ignore[call-overload]
    arr = np.zeros((5,), dtype=dt)
    arr.view(np.uint8)[:] = np.arange(arr.nbytes, dtype=np.uint8) % 251
    with ArrayPublisher(channel, shape=(5,), dtype=dt) as pub, ArraySubscriber(channel) as sub:
        assert sub.dtype == dt
        pub.send(arr)
        got = sub.recv(timeout=2)
        assert got is not None
        assert got.dtype == dt
        assert got.tobytes() == arr.tobytes()
        batch = sub.recv_batch(10)
        assert batch.shape == (0, 5)
        pub.send(arr)
        pub.send(arr)
        batch = sub.recv_batch(10)
        assert batch.shape == (2, 5)
        assert batch.dtype == dt
        assert batch.tobytes() == arr.tobytes() * 2


@pytest.mark.parametrize(("dtype", "match"), [(object, "Python objects"), ("U", "no size"),
                                              ("S", "no size"), ("V", "no size")])
def test_object_and_unsized_dtypes_are_refused_at_creation(channel: str, dtype: object,
                                                           match: str) -> None:
    with pytest.raises(TypeError, match=match):
        ArrayPublisher(channel, shape=(3,), dtype=dtype)  # type: ignore[arg-type]


def test_wrong_input_raises_and_publishes_nothing(channel: str) -> None:
    with ArrayPublisher(channel, shape=(2, 3), dtype=np.float32) as pub, \
            ArraySubscriber(channel) as sub:
        with pytest.raises(TypeError, match="float32"):
            pub.send(np.zeros((2, 3), dtype=np.float64))
        with pytest.raises(ValueError, match=r"\(2, 3\)"):
            pub.send(np.zeros((3, 2), dtype=np.float32))
        with pytest.raises(ValueError):
            pub.send(np.zeros((2, 3, 1), dtype=np.float32))
        with pytest.raises(TypeError):
            pub.send(np.array([None] * 6, dtype=object).reshape(2, 3))
        with pytest.raises(TypeError):
            pub.send_bytes(b"x" * 24)
        assert pub.stats()["msg_count"] == 0
        assert sub.recv(timeout=0) is None
        # The channel is healthy afterwards.
        pub.send(np.ones((2, 3), dtype=np.float32))
        got = sub.recv(timeout=2)
        assert got is not None
        np.testing.assert_array_equal(got, np.ones((2, 3), dtype=np.float32))


def test_non_contiguous_arrays_are_gathered_by_the_one_copy(channel: str) -> None:
    base = np.arange(48, dtype=np.float64).reshape(6, 8)
    with ArrayPublisher(channel, shape=(6, 4), dtype=np.float64) as pub, \
            ArraySubscriber(channel) as sub:
        pub.send(base[:, ::2])  # small: through the stamped C path
        got = sub.recv(timeout=2)
        assert got is not None
        np.testing.assert_array_equal(got, base[:, ::2])
    big = np.arange(2 * 4096, dtype=np.float64).reshape(2, 4096)
    with ArrayPublisher(channel + "_big", shape=(4096,), dtype=np.float64) as pub, \
            ArraySubscriber(channel + "_big") as sub:
        pub.send(big[1, ::-1])  # large, negative stride: through reserve + np.copyto
        pub.send(big.T[:, 1])  # large, strided
        first = sub.recv(timeout=2, copy=True)
        second = sub.recv(timeout=2)
        assert first is not None
        assert second is not None
        np.testing.assert_array_equal(first, big[1, ::-1])
        np.testing.assert_array_equal(second, big.T[:, 1])


def test_variable_shape_up_to_a_capacity(channel: str) -> None:
    with ArrayPublisher(channel, max_shape=(1000, 3), dtype=np.float32) as pub, \
            ArraySubscriber(channel) as sub:
        assert (sub.fixed_shape, sub.shape) == (False, (1000, 3))
        for n in (0, 1, 999, 1000):
            cloud = np.full((n, 3), n, dtype=np.float32)
            pub.send(cloud)
            got = sub.recv(timeout=2)
            assert got is not None
            assert got.shape == (n, 3)
            np.testing.assert_array_equal(got, cloud)
        with pytest.raises(ValueError, match="up to"):
            pub.send(np.zeros((1001, 3), dtype=np.float32))
        with pytest.raises(ValueError):
            pub.send(np.zeros((10, 4), dtype=np.float32))
        with pytest.raises(ValueError, match="shape="), pub.loan():
            pass
        with pub.loan(shape=(2, 3)) as out:
            out[:] = 7
        got = sub.recv(timeout=2)
        assert got is not None
        np.testing.assert_array_equal(got, np.full((2, 3), 7, dtype=np.float32))
        with pytest.raises(TypeError, match="fixed-shape"):
            sub.recv_batch()


def test_loan_publishes_on_exit_and_discards_on_exception(channel: str) -> None:
    with ArrayPublisher(channel, shape=(4,), dtype=np.int64) as pub, \
            ArraySubscriber(channel) as sub:
        with pub.loan() as out:
            assert out.flags.writeable
            out[:] = [1, 2, 3, 4]
            assert sub.recv(timeout=0) is None  # not published before the block ends
        got = sub.recv(timeout=2)
        assert got is not None
        assert got.tolist() == [1, 2, 3, 4]

        class Boom(Exception):
            pass

        def failed_loan() -> None:
            with pub.loan() as out:
                out[:] = 9
                raise Boom

        with pytest.raises(Boom):
            failed_loan()
        assert sub.recv(timeout=0) is None
        assert pub.stats()["msg_count"] == 1
        for i in range(3 * pub.num_slots):  # loans, kept or discarded, never leak buffers
            if i % 2:
                with pytest.raises(Boom):
                    failed_loan()
            else:
                with pub.loan() as out:
                    out[:] = 5
        # Every buffer is either in the ring (a full ring now) or free.
        assert pub._writer.free_buffers == pub._segment.layout.num_buffers - pub.num_slots
        assert sub.recv_latest(timeout=2) is not None


def test_a_loan_reserves_only_inside_its_with_block(channel: str) -> None:
    with ArrayPublisher(channel, shape=(3,), dtype=np.uint8) as pub:
        free = pub._writer.free_buffers
        loan = pub.loan()  # not entered: nothing reserved
        assert pub._writer.free_buffers == free
        with loan as out:
            assert pub._writer.free_buffers == free - 1
            out[:] = 1
            with pytest.raises(RuntimeError, match="in use"), loan:
                pass
            with pytest.raises(RuntimeError, match="reserved"):
                pub.send(np.zeros(3, dtype=np.uint8))  # one reservation at a time
        assert pub.stats()["msg_count"] == 1
        with loan as out:  # a finished loan can be used again
            out[:] = 2
        assert pub.stats()["msg_count"] == 2
        pub.close()
        with pytest.raises(ValueError, match="closed"):
            pub.loan()


def test_recv_latest_skips_and_counts(channel: str) -> None:
    with ArrayPublisher(channel, shape=(1,), dtype=np.int32, num_slots=16) as pub, \
            ArraySubscriber(channel) as sub:
        for i in range(10):
            pub.send(np.array([i], dtype=np.int32))
        latest = sub.recv_latest(timeout=1)
        assert latest is not None
        assert int(latest[0]) == 9
        assert sub.last_seq == 9
        stats = sub.stats()
        assert (stats["received"], stats["dropped"]) == (1, 9)
        assert sub.recv(timeout=0) is None


def test_recv_batch_stacks_a_backlog_with_timestamps(channel: str) -> None:
    with ArrayPublisher(channel, shape=(6,), dtype=np.float64, num_slots=64) as pub, \
            ArraySubscriber(channel) as sub:
        for i in range(50):
            pub.send(np.full(6, i, dtype=np.float64))
        batch = sub.recv_batch(max_n=30)
        assert batch.shape == (30, 6)
        assert batch[:, 0].tolist() == list(range(30))
        assert batch.flags.writeable  # a new array, not a view
        assert len(sub.last_batch_timestamps) == 30
        assert np.all(np.diff(sub.last_batch_timestamps) >= 0)
        assert sub.last_seq == 29
        rest = sub.recv_batch(max_n=1000)
        assert rest[:, 0].tolist() == list(range(30, 50))
        assert sub.recv_batch(timeout=0.01).shape == (0, 6)
        # An overrun backlog: the evicted ones are counted, the rest arrive in order.
        for i in range(200):
            pub.send(np.full(6, i, dtype=np.float64))
        batch = sub.recv_batch(max_n=1000)
        assert batch[:, 0].tolist() == list(range(136, 200))
        assert sub.stats()["dropped"] == 136
        with pytest.raises(ValueError):
            sub.recv_batch(max_n=0)


def test_a_view_survives_close_and_publisher_exit(channel: str) -> None:
    pub = ArrayPublisher(channel, shape=(1000,), dtype=np.float64)
    sub = ArraySubscriber(channel)
    pub.send(np.arange(1000, dtype=np.float64))
    view = sub.recv(timeout=2)
    assert view is not None
    sub.close()
    pub.close()
    assert float(view.sum()) == float(np.arange(1000).sum())  # memory-safe, no crash


def test_a_plain_subscriber_reads_header_and_payload(channel: str) -> None:
    arr = np.arange(12, dtype=">i2").reshape(3, 4)
    with ArrayPublisher(channel, shape=(3, 4), dtype=">i2") as pub, \
            Subscriber(channel, serialization="raw") as raw:
        pub.send(arr)
        payload = raw.recv_bytes(timeout=2)
        assert payload is not None
        assert raw.last_encoding == L.ENCODING_ARRAY
        decoded, header = decode_array(payload)
        np.testing.assert_array_equal(decoded, arr)
        assert decoded.dtype == np.dtype(">i2")
        assert (header.seq, header.shape) == (0, (3, 4))


def test_a_typed_subscriber_refuses_a_channel_that_is_not_typed(channel: str) -> None:
    with Publisher(channel, serialization="raw") as pub:
        pub.send_bytes(b"raw bytes")
        with pytest.raises(SHMSerializationError, match="not a typed-array channel"):
            ArraySubscriber(channel)
        assert pub.stats()["subscribers"] == 0  # the failed attach left no row behind


def test_a_corrupted_header_raises_format_error_and_is_consumed(channel: str) -> None:
    with ArrayPublisher(channel, shape=(4,), dtype=np.float64) as pub, \
            ArraySubscriber(channel) as sub:
        pub.send(np.ones(4))
        index = pub._segment.atom.load(pub._segment.layout.entries_offset) & L.ENTRY_INDEX_MASK
        start = pub._segment.layout.payload(index)
        pub._segment.view[start + 3] = 40  # ndim 40 > the 32 allowed
        with pytest.raises(SHMFormatError):
            sub.recv(timeout=2)
        assert sub.recv(timeout=0) is None  # consumed
        pub.send(np.full(4, 2.0))
        got = sub.recv(timeout=2)
        assert got is not None
        assert got.tolist() == [2.0] * 4


def test_small_and_large_sends_agree_with_loans(channel: str) -> None:
    """The three write paths (stamped C write for small arrays, reserve + copyto for large,
    loan) produce the same bytes on the wire as the header spec says."""
    for n in (6, 4096, 100_000):
        name = f"{channel}_{n}"
        with ArrayPublisher(name, shape=(n,), dtype=np.float64, num_slots=4) as pub, \
                Subscriber(name, serialization="raw") as raw:
            data = np.random.default_rng(n).standard_normal(n)
            pub.send(data)
            with pub.loan() as out:
                out[:] = data
            first, second = raw.recv_bytes(timeout=2), raw.recv_bytes(timeout=2)
            assert first is not None
            assert second is not None
            a, ha = decode_array(first)
            b, hb = decode_array(second)
            np.testing.assert_array_equal(a, data)
            np.testing.assert_array_equal(b, data)
            assert (ha.seq, hb.seq) == (0, 1)
            assert first[24:] == second[24:]  # equal but for the stamped seq and timestamp


def test_loans_and_large_sends_stamp_the_header_when_they_publish(channel: str) -> None:
    """The typed header's seq and timestamp are the message's own (written in the one C call
    that publishes), for loans of the full shape, of a smaller shape, and large sends."""
    with ArrayPublisher(channel, max_shape=(3, 4096), dtype=np.float64, num_slots=4) as pub, \
            Subscriber(channel, serialization="raw") as raw:
        with pub.loan(shape=(3, 4096)) as out:
            out[:] = 1
        with pub.loan(shape=(2, 100)) as out:
            out[:] = 2
        pub.send(np.full((3, 2000), 3.0))
        for seq, shape, value in [(0, (3, 4096), 1), (1, (2, 100), 2), (2, (3, 2000), 3)]:
            payload = raw.recv_bytes(timeout=2)
            assert payload is not None
            arr, header = decode_array(payload)
            assert arr.shape == shape
            assert (arr == value).all()
            assert (header.seq, raw.last_seq) == (seq, seq)
            assert header.timestamp_ns == raw.last_timestamp_ns > 0


def test_loan_of_the_full_shape_is_reused_and_cheap(channel: str) -> None:
    with ArrayPublisher(channel, shape=(8,), dtype=np.int16, num_slots=4) as pub:
        loan = pub.loan()
        assert pub.loan() is loan  # not in use: the same object, nothing allocated
        with loan as out:
            other = pub.loan()
            assert other is not loan  # in use: a new one, which cannot reserve meanwhile
            with pytest.raises(RuntimeError, match="reserved"), other:
                pass
            out[:] = 4
        with pub.loan() as again:
            assert again.base is not None  # a view of the segment, not a copy
            again[:] = 5
        assert pub.stats()["msg_count"] == 2
        assert pub._writer.free_buffers == pub._segment.layout.num_buffers - 2


@pytest.mark.parametrize("n", [131_075, 1_048_579])  # 1 MiB + 24 B (no GIL), 8 MiB + 24 B
def test_large_sends_copy_every_byte(channel: str, n: int) -> None:
    """Large arrays go out in one C copy without the GIL (and with non-temporal stores on
    x86-64 from 4 MiB): every byte arrives, from an aligned or a misaligned source, and a
    non-contiguous one takes the gathering path."""
    with ArrayPublisher(channel, shape=(n,), dtype=np.float64, num_slots=2) as pub, \
            ArraySubscriber(channel) as sub:
        data = np.random.default_rng(n).standard_normal(n)
        raw = bytearray(data.nbytes + 8)
        misaligned = np.frombuffer(raw, dtype=np.float64, count=n, offset=3)
        misaligned[:] = data[::-1]
        strided = np.random.default_rng(1).standard_normal(2 * n)[::2]
        for source in (data, misaligned, strided):
            assert pub.send(source) is True
            got = sub.recv(timeout=5, copy=True)
            assert got is not None
            np.testing.assert_array_equal(got, source)
        assert pub._writer.free_buffers == pub._segment.layout.num_buffers - 2
