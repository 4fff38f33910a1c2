"""Media analysis: RTP/RTCP streams, loss, jitter, MOS, one-way audio, DTMF, G.711 export.

See docs/media-quality.md. Everything here is sans-IO except :func:`sipflow.rtp.audio`'s
``export_call_audio`` (which reads a capture and writes WAV files).
"""
