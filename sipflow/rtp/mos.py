"""MOS per direction with the ITU-T G.107 E-model; codec impairments from ITU-T G.113.

How this works: R = Ro - Is - Id - Ie,eff + A (G.107 §3.1). With every G.107 default
parameter (Table 3: SLR 8, RLR 2, Nc -70 dBm0, Ps/Pr 35 dB(A), STMR 15, TELR 65, qdu 1,
A 0 for wired access), Ro - Is = 93.2. Assumptions, because a capture cannot know them:

* echo is well controlled (TELR 65 dB default), so Id comes from absolute delay only (Idd,
  G.107 §3.5 with mT = 100 ms); the one-way delay Ta is the network delay (half the RTCP
  round trip when the capture shows one, else 0) plus a jitter buffer of twice the mean
  jitter plus one packet time (ptime, default 20 ms);
* losses are random (BurstR = 1, G.107 §3.6);
* Ie and Bpl per codec from G.113 Appendix I (narrow-band values; wide-band codecs are
  given their narrow-band equivalent, so a perfect G.722/Opus call scores like G.711).

MOS from R: G.107 Annex B (B.4): 1 for R < 0, 4.5 for R > 100, else
1 + 0.035 R + R (R - 60)(100 - R) 7e-6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CODEC_IMPAIRMENT", "EModel", "mos_from_r", "r_factor"]

R0_MINUS_IS = 93.2  # G.107 §3 with all default values


@dataclass(frozen=True, slots=True)
class EModel:
    """Equipment impairment Ie and packet-loss robustness Bpl of a codec (G.113 App. I)."""

    ie: float
    bpl: float


# G.113 Appendix I, Tables I.1 and I.3 (Bpl for random loss; G.711 with its Appendix I
# PLC). Opus/G.722/AMR-WB: wide-band, mapped to their narrow-band-equivalent best case.
CODEC_IMPAIRMENT: dict[str, EModel] = {
    "pcmu": EModel(0.0, 25.1),
    "pcma": EModel(0.0, 25.1),
    "g722": EModel(0.0, 25.1),
    "opus": EModel(0.0, 25.1),
    "g729": EModel(11.0, 19.0),
    "g729a": EModel(11.0, 19.0),
    "g723": EModel(15.0, 16.1),
    "gsm": EModel(20.0, 10.0),  # GSM 06.10 full rate: Ie 20; Bpl not tabulated (assumed)
    "amr": EModel(5.0, 10.0),  # AMR 12.2: Ie 5; Bpl assumed
    "ilbc": EModel(10.0, 32.0),
    "speex": EModel(11.0, 19.0),  # not in G.113: treated like G.729
}
DEFAULT_IMPAIRMENT = EModel(0.0, 25.1)


def _idd(ta_ms: float) -> float:
    """Delay impairment Idd (G.107 §3.5, mT = 100 ms, sT = 1)."""
    if ta_ms <= 100.0:
        return 0.0
    x = math.log10(ta_ms / 100.0) / math.log10(2.0)
    idd: float = 25.0 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)
    return idd


def r_factor(codec: str | None, loss_pct: float, delay_ms: float) -> float:
    """Transmission rating R for a codec, packet loss (percent) and one-way delay (ms)."""
    imp = CODEC_IMPAIRMENT.get((codec or "").lower(), DEFAULT_IMPAIRMENT)
    ppl = max(loss_pct, 0.0)
    ie_eff = imp.ie + (95.0 - imp.ie) * ppl / (ppl + imp.bpl)  # G.107 eq. 7-29, BurstR 1
    return R0_MINUS_IS - _idd(delay_ms) - ie_eff


def mos_from_r(r: float) -> float:
    """G.107 Annex B: estimated MOS (conversational quality) from R."""
    if r < 0:
        return 1.0
    if r > 100:
        return 4.5
    return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


def mos(
    codec: str | None,
    loss_pct: float,
    mean_jitter_ms: float,
    ptime_ms: float | None = None,
    rtt_ms: float | None = None,
) -> float:
    """MOS of one direction under the assumptions in the module docstring."""
    delay = (rtt_ms or 0.0) / 2 + 2 * mean_jitter_ms + (ptime_ms or 20.0)
    return mos_from_r(r_factor(codec, loss_pct, delay))
