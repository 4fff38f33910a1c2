"""Media analysis: RTP/RTCP streams, loss, jitter, MOS, one-way audio, DTMF, G.711 decoding.

See docs/media-quality.md. Everything here is sans-IO: the captures are read by
:mod:`sipflow.engine` (the SRTP stage and the audio export get a second read through a
media sink) and WAV files are written by :mod:`sipflow.report.wav`.
"""
