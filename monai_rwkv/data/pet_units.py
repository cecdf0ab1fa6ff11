"""
PET units from DICOM headers: the factor that turns a PET series' activity concentration into body-weight SUV.

The PET bundle's network works in SUV (body weight, g/ml): ``SUV = C * W / D``, with ``C`` the activity concentration
in Bq/ml, ``W`` the patient's weight in g and ``D`` the injected activity in Bq decayed to the time the image values
refer to. What the header must say (DICOM PS3.3 C.8.9.1 PET Series, C.8.9.2 PET Isotope modules):

* Units (0054,1001) ``BQML``: ``C`` in Bq/ml (after each slice's RescaleSlope/Intercept, which the reader applies).
  ``GML`` means the values already are SUV (factor 1). Other units (``CNTS``, ``PROPCNTS``, ``CM2``, ...) are not
  an activity concentration and are refused.
* DecayCorrection (0054,1102) ``START``: the values are decay corrected to the series' reference time, so ``D`` is
  the injected dose decayed from RadiopharmaceuticalStartDateTime (or SeriesDate + RadiopharmaceuticalStartTime) to
  SeriesDate + SeriesTime, with RadionuclideHalfLife; ``ADMIN``: corrected to the administration time, ``D`` is the
  injected dose itself. ``NONE`` (each slice at its own acquisition time) is refused.
* PatientWeight (0010,1030) in kg and RadionuclideTotalDose (0018,1074) in Bq, both > 0.

Anything missing or outside these cases raises :class:`ValueError` naming the attribute, so a user learns what the
export lacks instead of getting silently wrong SUVs.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pydicom

__all__ = ["suv_bw_factor"]


def _parse_time(value: str) -> timedelta:
    """A DICOM TM string (``HHMMSS.FFFFFF``, seconds and fraction optional) as a time of day."""
    text = str(value).strip().replace(":", "")
    if not text or not text.split(".")[0].isdigit():
        raise ValueError(f"not a DICOM time: {value!r}")
    whole, _, fraction = text.partition(".")
    whole = whole.ljust(6, "0")
    hours, minutes, seconds = int(whole[:2]), int(whole[2:4]), int(whole[4:6])
    return timedelta(hours=hours, minutes=minutes, seconds=seconds + (float(f"0.{fraction}") if fraction else 0.0))


def _parse_datetime(date: str, time: str) -> datetime:
    text = str(date).strip()
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"not a DICOM date: {date!r}")
    return datetime(int(text[:4]), int(text[4:6]), int(text[6:8])) + _parse_time(time)


def _parse_dt(value: str) -> datetime:
    """A DICOM DT string ``YYYYMMDDHHMMSS.FFFFFF`` (any UTC offset suffix ignored)."""
    text = str(value).strip()
    for sign in ("+", "-"):
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]
    return _parse_datetime(text[:8], text[8:] or "000000")


def _positive(ds: pydicom.Dataset, keyword: str, what: str) -> float:
    value = ds.get(keyword)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"no {keyword} ({what})") from None
    if not number > 0 or not math.isfinite(number):
        raise ValueError(f"{keyword} ({what}) must be > 0, got {value}")
    return number


def suv_bw_factor(ds: pydicom.Dataset) -> float:
    """
    The factor ``s`` with ``SUVbw = s * value`` for the image values of a PET series (see the module docstring).

    Args:
        ds: a header of the series (any slice; only series-level attributes are read).

    Raises:
        ValueError: the header does not allow body-weight SUV (the message names the attribute).
    """
    units = str(ds.get("Units", "") or "").strip().upper()
    if units == "GML":
        return 1.0
    if units != "BQML":
        raise ValueError(
            f"PET Units {units or '(missing)'} is not an activity concentration; export the series in BQML or as "
            "body-weight SUV (GML)"
        )
    weight_g = _positive(ds, "PatientWeight", "patient weight in kg, needed for SUV") * 1000.0
    sequence = ds.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise ValueError("no RadiopharmaceuticalInformationSequence (injected dose and time, needed for SUV)")
    drug = sequence[0]
    dose = _positive(drug, "RadionuclideTotalDose", "injected activity in Bq")
    decay = str(ds.get("DecayCorrection", "") or "").strip().upper()
    if decay == "ADMIN":
        return weight_g / dose
    if decay != "START":
        raise ValueError(
            f"DecayCorrection {decay or '(missing)'}: only series decay corrected to START or ADMIN can be converted "
            "to SUV"
        )
    half_life = _positive(drug, "RadionuclideHalfLife", "half-life in s")
    try:
        scan = _parse_datetime(ds.get("SeriesDate", ""), ds.get("SeriesTime", ""))
    except ValueError:
        raise ValueError("no valid SeriesDate/SeriesTime (the time the values are decay corrected to)") from None
    try:
        if drug.get("RadiopharmaceuticalStartDateTime"):
            injection = _parse_dt(drug.RadiopharmaceuticalStartDateTime)
        else:
            injection = _parse_datetime(ds.get("SeriesDate", ""), drug.get("RadiopharmaceuticalStartTime", ""))
    except ValueError:
        raise ValueError("no valid RadiopharmaceuticalStartDateTime or RadiopharmaceuticalStartTime") from None
    elapsed = (scan - injection).total_seconds()
    if elapsed < 0:
        raise ValueError(f"the series starts {-elapsed:.0f} s before the injection (check the header times)")
    return weight_g / (dose * 2.0 ** (-elapsed / half_life))
