"""Writes the hand-made seed inputs of every fuzz target (tests/fuzz/corpus/<target>/seed-*):
valid frames of each framing and the edges around them (empty, incomplete, a header above
max_size, malformed bytes), laid out as each target reads its input (see the target's .c).
The rest of each corpus is what libFuzzer found and `-merge=1` kept (files named by SHA-1)
and the inputs of past findings (regress-*). Run from anywhere: python tests/fuzz/seeds.py
"""

from __future__ import annotations

import pathlib
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


def upto(value: int) -> bytes:
    """fz_upto's encoding of exactly `value` (it must be within the target's range)."""
    return b"\x06" + value.to_bytes(8, "big")


TOP = b"\x01"  # fz_upto: the largest value allowed


def stream(data: bytes, cuts: tuple[int, ...] = (), payload: tuple[int, int] = (0, 0), psel: int = 0) -> bytes:
    """fz_run_framing's part: the chunk cuts, the payload slice (start, length), the stream."""
    head = bytes([len(cuts)]) + b"".join(struct.pack(">H", c) for c in cuts)
    return head + struct.pack(">HHB", payload[0], payload[1], psel) + data


def length_seeds() -> dict[str, bytes]:
    out = {}
    for index, width in enumerate((1, 2, 4, 8)):
        for little in (0, 1):
            order = "<" if little else ">"
            code = {1: "B", 2: "H", 4: "I", 8: "Q"}[width]
            def frame(p: bytes, o: str = order, c: str = code) -> bytes:
                return struct.pack(o + c, len(p)) + p
            params = bytes([index | little << 2]) + upto(100)
            name = f"w{width}{'le' if little else 'be'}"
            out[f"{name}-frames"] = params + stream(frame(b"hello") + frame(b"") + frame(b"x" * 100), (3, 7), (0, 5))
            out[f"{name}-partial"] = params + stream(frame(b"abcdef")[:-2], (1,))
            out[f"{name}-too-large"] = params + stream(struct.pack(order + code, 101) + b"z" * 8)
    out["w8-top"] = b"\x03" + TOP + stream(struct.pack(">Q", 1 << 63) + b"x")
    return out


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varint_seeds() -> dict[str, bytes]:
    params = upto(1000)
    return {
        "frames": params + stream(varint(3) + b"abc" + varint(0) + varint(300) + b"v" * 300, (1, 5), (2, 3)),
        "long-header": params + stream(b"\x83\x80\x00abc"),  # 3, said in 3 bytes
        "too-large": params + stream(varint(1001) + b"x"),
        "65-bits": TOP + stream(b"\xff" * 9 + b"\x02"),
        "partial": params + stream(b"\x80\x80"),
    }


def delimiter_seeds() -> dict[str, bytes]:
    out = {}
    for name, delim, keep in (("nl", b"\n", 0), ("crlf", b"\r\n", 0), ("crlf-keep", b"\r\n", 1),
                              ("aba", b"aba", 0), ("long", b"--end--!", 1)):
        params = bytes([(len(delim) - 1) | keep << 3]) + delim + upto(16)
        body = b"first" + delim + delim + b"x" * 16 + delim + b"rest"
        out[f"{name}-frames"] = params + stream(body, (3, 6, 30), (0, 5))
        out[f"{name}-too-large"] = params + stream(b"y" * 40)
        out[f"{name}-split"] = params + stream(b"ab" + delim + b"cd" + delim, (2 + len(delim) // 2,))
    return out


def fixed_seeds() -> dict[str, bytes]:
    return {
        "n4": upto(3) + stream(b"abcdefghij", (1, 5), (0, 4), 1),
        "n1": upto(0) + stream(b"xyz", (1,), (0, 1), 1),
        "huge": TOP + stream(b"short"),
    }


def ascii_seeds() -> dict[str, bytes]:
    return {
        "w5": bytes([4]) + upto(99999) + stream(b"00003abc00000" + b"00010" + b"0123456789", (2, 9), (5, 3)),
        "w5-too-large": bytes([4]) + upto(100) + stream(b"00101xyz"),
        "w5-malformed": bytes([4]) + upto(100) + stream(b"00x"),
        "w20": bytes([19]) + TOP + stream(b"9" * 20),
        "w1": bytes([0]) + upto(9) + stream(b"3abc0", (1,), (0, 9)),
    }


def netstring_seeds() -> dict[str, bytes]:
    params = upto(1000)
    return {
        "frames": params + stream(b"5:hello,0:,3:abc,", (1, 4, 9), (0, 5)),
        "leading-zero": params + stream(b"05:hello,"),
        "no-comma": params + stream(b"3:abc;"),
        "too-large": params + stream(b"1001:"),
        "no-colon": params + stream(b"12x"),
        "huge": TOP + stream(b"9" * 22),
    }


def resp_seeds() -> dict[str, bytes]:
    params = upto(99) + upto(8)
    array = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    return {
        "array": params + stream(array + b"*0\r\n*-1\r\n" + array, (5, 12, 30)),
        "inline": params + stream(b"GET k\r\nPING\n  \t SET a  b\r\n\n", (3, 10)),
        "leading-zeros": params + stream(b"*02\r\n$03\r\nabc\r\n$0\r\n\r\n"),
        "too-many-args": params + stream(b"*9\r\n"),
        "too-large-bulk": params + stream(b"*1\r\n$200\r\n"),
        "malformed": params + stream(b"*1\r\n$3\r\nabcd\r\n"),
        "inline-too-large": params + stream(b"x" * 120),
        "partial": params + stream(array[:-3], (4,)),
        "null-bulk": params + stream(b"*1\r\n$-1\r\n"),
    }


def find_any_seeds() -> dict[str, bytes]:
    def case(delims: list[bytes], start: int, split: int, data: bytes) -> bytes:
        head = bytes([len(delims) - 1]) + b"".join(bytes([len(d)]) + d for d in delims)
        return head + struct.pack(">HH", start, split) + data

    return {
        "crlf-lf": case([b"\r\n", b"\n"], 0, 3, b"abc\r\ndef\n"),
        "tie": case([b"ab", b"a"], 0, 1, b"xxab"),
        "longer-earlier": case([b"abc", b"b"], 0, 2, b"abc"),
        "empty-delim": case([b"", b"z"], 1, 0, b"zz"),
        "four": case([b"1", b"22", b"333", b"4444"], 2, 5, b"04444333221"),
    }


def buffer_seeds() -> dict[str, bytes]:
    reserve, commit, consume, compact, shrink, append, free = 0, 2, 3, 4, 5, 6, 7
    small = b"\x04"  # fz_upto: the next byte
    return {
        # reserve 64 (limit SIZE_MAX), commit 40, consume 10, compact, append, consume all, shrink
        "steady": bytes([reserve, 1, 4, 64, commit, 4, 40, consume, 4, 10, 0, compact,
                         append, 0, 5]) + b"hello" + bytes([consume, 1, 0xFF, shrink, 0]),
        # a huge reserve refused (-ENOMEM), then one clamped by a small limit
        "huge": bytes([reserve, 3, 1, reserve, 2, 4, 8, 1, free]),
        "grow": bytes([append, 0x07, 0xD0]) + b"a" * 2000 + bytes([reserve, 1]) + small + bytes([200, commit, 1]),
    }


TARGETS = {
    "fuzz_frame_length": length_seeds,
    "fuzz_frame_varint": varint_seeds,
    "fuzz_frame_delimiter": delimiter_seeds,
    "fuzz_frame_fixed": fixed_seeds,
    "fuzz_frame_ascii": ascii_seeds,
    "fuzz_frame_netstring": netstring_seeds,
    "fuzz_resp": resp_seeds,
    "fuzz_find_any": find_any_seeds,
    "fuzz_buffer": buffer_seeds,
}


def main() -> None:
    for target, seeds in TARGETS.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds().items():
            (folder / f"seed-{name}").write_bytes(data)
        print(f"{target}: {len(seeds())} seeds")


if __name__ == "__main__":
    main()
