"""WAV files of decoded RTP audio (``sipflow audio``): mono 16-bit PCM, 8 kHz for G.711."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sipflow.rtp.audio import RATE
from sipflow.rtp.streams import RtpStream


def write_wav(path: Path, samples: npt.NDArray[np.int16], rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def wav_name(st: RtpStream) -> str:
    """``<call>-<direction>-<ssrc>.wav`` (``stream-<id>`` for a stream mapped to no call)."""
    name = f"{st.call if st.call is not None else 'stream'}-{st.direction or st.id}"
    return f"{name}-{st.ssrc:08x}.wav"


def write_streams(
    streams: list[RtpStream], samples: dict[int, npt.NDArray[np.int16]], out_dir: str | Path
) -> list[Path]:
    """One WAV per stream that has samples, in ``out_dir`` (created); the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for st in streams:
        if st.id in samples:
            target = out / wav_name(st)
            write_wav(target, samples[st.id])
            written.append(target)
    return written
