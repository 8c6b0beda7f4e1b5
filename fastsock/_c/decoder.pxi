# fastsock.FrameDecoder and FrameEncoder in the compiled backend. Interim: the pure twin's
# classes (fastsock/_py/decoder.py), so that both backends have the names while the compiled
# classes are written; the compiled ones replace this file.

from fastsock._py.decoder import FrameDecoder, FrameEncoder

DECODER_ALL = ["FrameDecoder", "FrameEncoder"]
