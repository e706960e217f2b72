"""One image's score, and its renderings that the service and `nsfwoid score` share: the text form, the JSON
shape, and the SHA-1 in MediaWiki's base 36."""

from __future__ import annotations

from dataclasses import dataclass, field

SCORE_DECIMALS = 9
BASE36_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def format_score(value: float) -> str:
    """The text form of a score: nine decimals."""
    return f"{value:.{SCORE_DECIMALS}f}"


def base36_sha1(hex_digest: str) -> str:
    """MediaWiki's img_sha1 form of a SHA-1: base 36, zero-padded to 31 digits."""
    number, digits = int(hex_digest, 16), []
    while number:
        number, rest = divmod(number, 36)
        digits.append(BASE36_DIGITS[rest])
    return "".join(reversed(digits)).rjust(31, "0")


@dataclass(frozen=True)
class Scored:
    """One image's score: the highest of its sampled frames' scores."""

    score: float
    model: dict[str, str]  # the identity of the model that scored it (Model.identity)
    frame_scores: tuple[tuple[int, float], ...]  # (frame index, score), in frame order
    frame_count: int
    sha1: str
    size: int
    preprocess_seconds: float
    inference_seconds: float
    # Its renderings, as the service's answers and `nsfwoid score` write them: made once, with the score, so that
    # each answer only copies them. The text form, and the JSON shape.
    text: str = field(init=False, repr=False, compare=False)
    json: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", format_score(self.score))
        object.__setattr__(self, "json", {
            "score": self.score,
            "model": self.model,
            "sha1": self.sha1,
            "sha1_base36": base36_sha1(self.sha1),
            "bytes": self.size,
            "frames": {"count": self.frame_count,
                       "scored": [{"index": index, "score": score} for index, score in self.frame_scores]},
        })
