"""Inverse text normalisation (English): spoken-form numbers to written form.

The recogniser outputs words as they are spoken ("twenty one dollars at three thirty p m");
`inverse_normalize` rewrites them as people write them ("$21 at 3:30 PM"). It is the inverse
of `harken.text.normalize_english`, following a common house style:

- cardinals: digits from ten up ("twenty one" -> "21", "one thousand five hundred" -> "1500",
  "twelve thousand five hundred" -> "12,500", "two million" -> "2 million"); one to nine alone stay words ("two people"), but become
  digits with a unit, currency, percent, time or decimal ("2 kg", "$2", "2%", "2.5");
- ordinals: "twenty first" -> "21st"; first to ninth stay words, except in dates;
- years from 1300 to 2099 "nineteen ninety nine" -> "1999", "nineteen oh five" -> "1905", decades
  "nineteen nineties" -> "1990s";
- decimals "three point one four" -> "3.14"; negatives "minus five" -> "-5";
- money "twenty one dollars fifty cents" -> "$21.50", "two million dollars" -> "$2 million"
  (also pounds sterling when said "pounds sterling", euros, yen);
- percentages "fifty percent" -> "50%"; times "three thirty p m" -> "3:30 PM",
  "at seven fifteen" -> "at 7:15", "the nine thirty train" -> "the 9:30 train"; dates "may fifth nineteen ninety nine" -> "May 5, 1999",
  "the fifth of may" -> "the 5th of May";
- metric measures abbreviated ("five kilograms" -> "5 kg"), others keep their unit word
  ("ten miles" -> "10 miles").

`inverse_normalize_words` works on a word list and returns the spans it rewrites, so the
caller can keep each spoken word's time and attach the written form to the span's first word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

UNITS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
         "eight": 8, "nine": 9}
TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
         "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
        "eighty": 80, "ninety": 90}
SCALES = {"thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9, "trillion": 10 ** 12}
ORDINAL_UNITS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
                 "seventh": 7, "eighth": 8, "ninth": 9}
ORDINAL_TEENS = {"tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
                 "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17,
                 "eighteenth": 18, "nineteenth": 19}
ORDINAL_TENS = {"twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50,
                "sixtieth": 60, "seventieth": 70, "eightieth": 80, "ninetieth": 90}
ORDINAL_SCALES = {"hundredth": 100, "thousandth": 10 ** 3, "millionth": 10 ** 6,
                  "billionth": 10 ** 9}
PLURAL_TENS = {"twenties": 20, "thirties": 30, "forties": 40, "fifties": 50, "sixties": 60,
               "seventies": 70, "eighties": 80, "nineties": 90}
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")
CURRENCIES = {  # spoken unit: (symbol, unit of one hundredth)
    "dollars": ("$", "cents"), "dollar": ("$", "cents"), "euros": ("€", "cents"),
    "euro": ("€", "cents"), "yen": ("¥", ""),
}
METRIC = {"kilometres": "km", "kilometre": "km", "kilometers": "km", "kilometer": "km",
          "metres": "m", "metre": "m", "meters": "m", "meter": "m", "centimetres": "cm",
          "centimetre": "cm", "centimeters": "cm", "centimeter": "cm", "millimetres": "mm",
          "millimetre": "mm", "millimeters": "mm", "millimeter": "mm", "kilograms": "kg",
          "kilogram": "kg", "grams": "g", "gram": "g", "milligrams": "mg", "milligram": "mg",
          "litres": "L", "litre": "L", "liters": "L", "liter": "L", "millilitres": "mL",
          "milliliters": "mL", "kilometres per hour": "km/h", "hertz": "Hz",
          "kilohertz": "kHz", "megahertz": "MHz", "kilowatts": "kW", "kilowatt": "kW",
          "watts": "W", "watt": "W", "volts": "V", "volt": "V"}
UNIT_WORDS = frozenset({
    "miles", "mile", "feet", "foot", "inches", "inch", "yards", "yard", "pounds", "pound",
    "ounces", "ounce", "tons", "ton", "acres", "acre", "degrees", "degree", "gallons",
    "gallon", "pints", "pint"})
TIME_MARKERS = {("a", "m"): "AM", ("p", "m"): "PM", ("am",): "AM", ("pm",): "PM"}
YEAR_PREPOSITIONS = frozenset({"in", "year", "circa", "since"})
TIME_PREPOSITIONS = frozenset({"at", "by", "until", "till", "from", "before", "after", "around"})
SMALLEST_DIGITS = 10  # cardinals and ordinals below this stay words when alone


@dataclass(frozen=True)
class Number:
    """A parsed run of number words `words[start:end]`."""

    value: int
    start: int
    end: int
    ordinal: bool = False
    text: str = ""  # the written digits when they are not just str(value) ("1.5", "007")


@dataclass(frozen=True)
class Rewrite:
    """Words `start:end` (end exclusive) are written as `text`."""

    start: int
    end: int
    text: str


def _cardinal(words: Sequence[str], i: int, limit: int) -> Number | None:
    """The longest cardinal (or ordinal, when its last word is one) starting at `i`."""
    total, current, last = 0, 0, None
    j, best, scale_cap = i, None, None
    while j < limit:
        w = words[j]
        if w == "a" and last is None and j + 1 < limit and (words[j + 1] == "hundred"
                                                           or words[j + 1] in SCALES):
            current, last = 1, "unit"
        elif w in UNITS or w in ORDINAL_UNITS:
            if not (last in (None, "hundred", "scale", "and")
                    or (last == "ten" and current % 10 == 0)):
                break
            current += UNITS.get(w) or ORDINAL_UNITS[w]
            last = "unit"
        elif w in TEENS or w in ORDINAL_TEENS:
            if last not in (None, "hundred", "scale", "and"):
                break
            current += TEENS.get(w) or ORDINAL_TEENS[w]
            last = "teen"
        elif w in TENS or w in ORDINAL_TENS:
            if last not in (None, "hundred", "scale", "and"):
                break
            current += TENS.get(w) or ORDINAL_TENS[w]
            last = "ten"
        elif w in ("hundred", "hundredth"):
            if last not in ("unit", "teen") or current >= 100:
                break
            current *= 100
            last = "hundred"
        elif w in SCALES or w in ORDINAL_SCALES:
            scale = SCALES.get(w) or ORDINAL_SCALES[w]
            if last not in ("unit", "teen", "ten", "hundred") or (scale_cap and scale >= scale_cap):
                break
            total += current * scale
            current, last, scale_cap = 0, "scale", scale
        elif w == "and" and last in ("hundred", "scale") and j + 1 < limit and (
                words[j + 1] in UNITS or words[j + 1] in TEENS or words[j + 1] in TENS
                or words[j + 1] in ORDINAL_UNITS or words[j + 1] in ORDINAL_TEENS
                or words[j + 1] in ORDINAL_TENS):
            last = "and"
            j += 1
            continue
        else:
            break
        j += 1
        ordinal = w in ORDINAL_UNITS or w in ORDINAL_TEENS or w in ORDINAL_TENS \
            or w in ORDINAL_SCALES or w == "hundredth"
        best = Number(total + current, i, j, ordinal)
        if ordinal:
            break
    return best


def _two_digits(words: Sequence[str], i: int, limit: int) -> tuple[int, int] | None:
    """A value 10-99 said as one or two words ("ninety nine", "eighteen") and where it ends."""
    if i >= limit:
        return None
    w = words[i]
    if w in TEENS:
        return TEENS[w], i + 1
    if w in TENS:
        if i + 1 < limit and words[i + 1] in UNITS:
            return TENS[w] + UNITS[words[i + 1]], i + 2
        return TENS[w], i + 1
    return None


def _year(words: Sequence[str], i: int, limit: int) -> Rewrite | None:
    """'nineteen ninety nine' -> 1999, 'nineteen oh five', 'fifteen hundred', '... nineties'."""
    head = _two_digits(words, i, limit)
    early = i > 0 and words[i - 1] in YEAR_PREPOSITIONS  # "in eleven sixty six"
    if head is None or not (11 if early else 13) <= head[0] <= 20:
        return None  # "eleven forty" is a time, not 1140
    century, j = head
    if j >= limit:
        return None
    w = words[j]
    if w == "hundred" and not (j + 1 < limit and (words[j + 1] in UNITS or words[j + 1] == "and"
                                                   or words[j + 1] in TEENS
                                                   or words[j + 1] in TENS)):
        if j + 1 < limit and words[j + 1] in SCALES:
            return None
        return Rewrite(i, j + 1, f"{century}00")
    if w == "hundred" and j + 1 < limit and words[j + 1] == "and":  # "nineteen hundred and five"
        rest = _cardinal(words, j + 2, limit) if j + 2 < limit else None
        if rest is not None and not rest.ordinal and rest.value < 100 and (
                rest.end >= limit or words[rest.end] not in SCALES):
            return Rewrite(i, rest.end, f"{century}{rest.value:02d}")
        return Rewrite(i, j + 1, f"{century}00")  # "between eighteen hundred and ..."
    if w in ("oh", "o") and j + 1 < limit and words[j + 1] in UNITS:
        return Rewrite(i, j + 2, f"{century}0{UNITS[words[j + 1]]}")
    if w in PLURAL_TENS:
        return Rewrite(i, j + 1, f"{century}{PLURAL_TENS[w]}s")
    if j + 1 < limit and w in TENS and words[j + 1] in ("ties",):
        return None
    tail = _two_digits(words, j, limit)
    if tail is None or century == 20 and tail[0] < 10:
        return None
    if tail[1] < limit and words[tail[1]] in ("hundred", "thousand") | SCALES.keys():
        return None
    return Rewrite(i, tail[1], f"{century}{tail[0]:02d}")


def _digits_text(number: Number) -> str:
    if number.text:
        return number.text
    if number.value >= 10 ** 6 and number.value % 10 ** 6 == 0 and not number.ordinal:
        for name, scale in sorted(SCALES.items(), key=lambda kv: -kv[1]):
            if number.value % scale == 0 and number.value >= scale:
                return f"{number.value // scale:,} {name}"
    if number.value < 10000:  # "1500", "2005": four digits without a comma, as books print them
        return str(number.value)
    return f"{number.value:,}"


def _ordinal_suffix(value: int) -> str:
    if value % 100 in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")


def _decimal(words: Sequence[str], number: Number, limit: int) -> Number:
    """'three point one four' -> 3.14 (digits after 'point' said one by one)."""
    j = number.end
    if number.ordinal or j >= limit or words[j] != "point":
        return number
    digits = []
    k = j + 1
    while k < limit and (words[k] in UNITS or words[k] in ("zero", "oh")):
        digits.append(str(UNITS.get(words[k], 0)))
        k += 1
    if not digits:
        return number
    return Number(number.value, number.start, k, False, f"{_digits_text(number)}.{''.join(digits)}")


def _number_at(words: Sequence[str], i: int, limit: int) -> Number | None:
    """A cardinal, ordinal or decimal at `i`, or a run of digits said one by one."""
    w = words[i]
    if w in ("zero", "oh") or (w == "point" and i + 1 < limit and words[i + 1] in UNITS):
        k = i
        digits = []
        if w == "point":
            k += 1
        while k < limit and (words[k] in UNITS or words[k] == "zero" or (words[k] == "oh"
                                                                         and digits)):
            digits.append(str(UNITS.get(words[k], 0)))
            k += 1
        if w == "point" and digits:
            return Number(0, i, k, False, "." + "".join(digits))
        if w == "zero" and len(digits) >= 2:
            return Number(int("".join(digits)), i, k, False, "".join(digits))
        if w == "zero":
            return _decimal(words, Number(0, i, i + 1, False, "0"), limit)
        return None
    number = _cardinal(words, i, limit)
    if number is None:
        return None
    return _decimal(words, number, limit)


def _time(words: Sequence[str], i: int, limit: int) -> Rewrite | None:
    """'three thirty p m' -> '3:30 PM', 'seven a m', 'at seven fifteen' -> 'at 7:15'."""
    hour_word = words[i]
    hour = UNITS.get(hour_word) or TEENS.get(hour_word)
    if hour is None or hour > 12:
        return None
    j, minutes = i + 1, None
    if j + 1 < limit and words[j] in ("oh", "o") and words[j + 1] in UNITS:
        minutes, j = UNITS[words[j + 1]], j + 2
    else:
        two = _two_digits(words, j, limit)
        if two is not None and two[0] <= 59:
            minutes, j = two
    for marker, written in TIME_MARKERS.items():
        if tuple(words[j: j + len(marker)]) == marker and j + len(marker) <= limit:
            clock = f"{hour}:{minutes:02d}" if minutes is not None else f"{hour}"
            return Rewrite(i, j + len(marker), f"{clock} {written}")
    if j < limit and words[j] == "o'clock" and minutes is None:
        return Rewrite(i, j + 1, f"{hour} o'clock")
    if minutes is not None and (i > 0 and words[i - 1] in TIME_PREPOSITIONS
                                or minutes >= 10):  # "the nine thirty train"
        return Rewrite(i, j, f"{hour}:{minutes:02d}")
    return None


def _date(words: Sequence[str], i: int, limit: int, breaks: Sequence[str]) -> Rewrite | None:
    """'may fifth' -> 'May 5', 'may fifth nineteen ninety nine' -> 'May 5, 1999'."""
    if words[i] not in MONTHS:
        return None
    month = words[i].capitalize()
    if i + 1 >= limit:
        if i >= 2 and words[i - 1] == "of" and _is_ordinal_word(words[i - 2]):
            return Rewrite(i, i + 1, month)  # "the 5th of May"
        return None
    year = _year(words, i + 1, limit)
    if year is not None:  # "june nineteen fourteen"
        return Rewrite(i, year.end, f"{month} {year.text}")
    day = _cardinal(words, i + 1, limit)
    if day is None or not 1 <= day.value <= 31:
        if i >= 2 and words[i - 1] == "of" and _is_ordinal_word(words[i - 2]):
            return Rewrite(i, i + 1, month)  # "the 5th of May"
        return None
    if not day.ordinal and day.value < SMALLEST_DIGITS and words[i] == "may":
        return None  # "may one day" is not a date
    suffix = _ordinal_suffix(day.value) if day.ordinal else ""  # "May fifth" -> "May 5th"
    text, end = f"{month} {day.value}{suffix}", day.end
    year_limit = limit
    if end == limit and breaks[end - 1] == ",":  # "May 5, 1999"
        year_limit = _span_limit(breaks, end, len(words))
    year = _year(words, end, year_limit) if end < year_limit else None
    if year is None and end < year_limit:  # "two thousand and one"
        number = _cardinal(words, end, year_limit)
        if number is not None and not number.ordinal and 2000 <= number.value <= 2099:
            year = Rewrite(end, number.end, str(number.value))
    if year is not None:
        text, end = f"{text}, {year.text}", year.end
    return Rewrite(i, end, text)


def _is_ordinal_word(word: str) -> bool:
    return any(word in table for table in (ORDINAL_UNITS, ORDINAL_TEENS, ORDINAL_TENS,
                                            ORDINAL_SCALES))


def _of_month(words: Sequence[str], number: Number, limit: int) -> bool:
    end = number.end
    return end + 1 < limit and words[end] == "of" and words[end + 1] in MONTHS


def _span_limit(breaks: Sequence[str], i: int, n: int) -> int:
    """One past the last word of the run from `i` that no punctuation interrupts."""
    for j in range(i, n):
        if breaks[j]:
            return j + 1
    return n


def _rewrite_number(words: Sequence[str], i: int, limit: int) -> Rewrite | None:
    """A number at `i` with what it measures: money, percent, unit, ordinal or plain."""
    number = _number_at(words, i, limit)
    if number is None:
        return None
    end, text = number.end, _digits_text(number)
    if number.ordinal:
        if number.value < SMALLEST_DIGITS and not _of_month(words, number, limit):
            return None
        return Rewrite(i, end, f"{text}{_ordinal_suffix(number.value)}")
    after = words[end] if end < limit else ""
    if after in SCALES and number.value < 1000 and number.text:  # "two point five million"
        text, end = f"{text} {after}", end + 1
        after = words[end] if end < limit else ""
    if after in CURRENCIES:
        symbol, cent_word = CURRENCIES[after]
        end += 1
        if cent_word and number.text == "" and " " not in text:
            rest = end + (1 if end < limit and words[end] == "and" else 0)
            cents = _cardinal(words, rest, limit) if rest < limit else None
            if (cents is not None and not cents.ordinal and cents.value < 100
                    and cents.end < limit and words[cents.end] in ("cents", "cent")):
                return Rewrite(i, cents.end + 1,
                               f"{symbol}{number.value:,}.{cents.value:02d}")
        if not number.text and " " not in text:
            text = f"{number.value:,}"  # amounts of money take a comma: "$3,500"
        return Rewrite(i, end, f"{symbol}{text}")
    if after == "pounds" and end + 1 < limit and words[end + 1] == "sterling":
        return Rewrite(i, end + 2, f"£{text}")
    if after == "percent":
        return Rewrite(i, end + 1, f"{text}%")
    if after in METRIC:
        return Rewrite(i, end + 1, f"{text} {METRIC[after]}")
    if number.text or number.value >= SMALLEST_DIGITS or after in UNIT_WORDS:
        return Rewrite(i, end, text)
    return None


def inverse_normalize_words(words: Sequence[str], breaks: Sequence[str] | None = None
                            ) -> list[Rewrite]:
    """The spans of `words` (lowercase spoken words) that have a written form, left to right.

    `breaks[i]` is the punctuation after word i ("" for none): a number never runs across
    punctuation (except the comma of "May 5, 1999"). Words outside the spans stay as they are.
    """
    words = [w.lower() for w in words]
    n = len(words)
    breaks = list(breaks) if breaks is not None else [""] * n
    if len(breaks) != n:
        raise ValueError(f"breaks: expected one entry per word ({n}), got {len(breaks)}")
    for k in range(n - 1):  # "p. m." is one marker: its first period is no break
        if words[k] in ("a", "p") and words[k + 1] == "m" and breaks[k] == ".":
            breaks[k] = ""
    rewrites: list[Rewrite] = []
    i = 0
    while i < n:
        limit = _span_limit(breaks, i, n)
        found = None
        if words[i] == "minus" and i + 1 < limit:
            inner = _rewrite_number(words, i + 1, limit)
            number = _number_at(words, i + 1, limit)
            if inner is None and number is not None and not number.ordinal:
                inner = Rewrite(i + 1, number.end, _digits_text(number))
            if inner is not None and inner.text[:1].isdigit():
                found = Rewrite(i, inner.end, "-" + inner.text)
        else:
            found = (_date(words, i, limit, breaks) or _time(words, i, limit)
                     or _year(words, i, limit) or _rewrite_number(words, i, limit))
        if found is None:
            i += 1
            continue
        rewrites.append(found)
        i = found.end
    return rewrites


def inverse_normalize(text: str) -> str:
    """'i paid twenty one dollars at three thirty p m' -> 'i paid $21 at 3:30 PM'."""
    words = text.split()
    out: list[str] = []
    i = 0
    for rewrite in inverse_normalize_words(words):
        out.extend(words[i: rewrite.start])
        out.append(rewrite.text)
        i = rewrite.end
    out.extend(words[i:])
    return " ".join(out)


__all__ = ["Rewrite", "inverse_normalize", "inverse_normalize_words"]
