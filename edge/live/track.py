"""Track cards across frames so the embedder only runs when it has something new to say.

Boxes are associated with existing tracks by oriented-box (polygon) IoU plus closeness to the
track's predicted centre (constant-velocity motion). Each track keeps a sliding window of index
verdicts and votes a card id from them. A box is re-embedded only when its track is new, still
uncertain, moved or changed shape a lot since its last embedding, or every `refresh_every` frames
(every `unknown_every` while no card is named for it); on a static scene of known cards the
embeddings per frame therefore fall to about zero. A verdict verified by geometry settles its
track's vote at once (the verdicts that proved nothing before it are dropped): a verified, stable
track is not verified again every frame, and a new card is named as soon as its track is
confirmed, even when its first looks (sliding in, half out of the frame) proved nothing.
Events: card_appeared (a track is confirmed), card_identified (its vote settles or changes),
card_left (a confirmed track is lost).
Two printings that one look's small print cannot tell apart are told apart by the looks
together: each undecided look's lean (edge.recognize.reprints) adds up, and the printing it leans to is
proven once enough looks agree (TrackerConfig.lean_*).
A track seen again after frames unseen is looked at again: a person may have swapped the card at
the same spot. When geometry then proves another card than the one its track had proven, the old
track leaves and a new one starts there (a swap, not a change of mind).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge.recognize.rectify import centre, diagonal, polygon_iou
from edge.types import Candidate, Match, OrientedBox

logger = logging.getLogger(__name__)

EventKind = Literal["card_appeared", "card_identified", "card_left"]


BACKGROUND = (
    "background"  # the reason of a verdict that a box is no card (edge.recognize.verify_stage)
)


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Association gates, vote window and re-embedding policy (frames, not seconds)."""

    min_iou: float = 0.1  # below this a box only matches on motion, if close enough
    max_centre_jump: float = 0.6  # gate: centre distance / box diagonal
    min_hits: int = 2  # frames seen before a track is announced
    max_misses: int = 8  # frames unseen before a track is dropped
    window: int = 7  # votes kept per track
    min_votes: int = 3  # votes needed before a track counts as identified
    min_share: float = 0.6  # share of the window's weight the winner needs
    refresh_every: int = 30  # re-embed a stable track at least this often
    # ... and a track that no card has been named for this often: its first looks may have been
    # poor (a card sliding in, cut by the frame's edge or blurred by the hand), and an unknown
    # card that stays is rare
    unknown_every: int = 3
    reembed_iou: float = 0.6  # re-embed when IoU with the box at the last embedding drops below
    recheck_frames: int = 15  # after a gap, look at a track every frame for this long (a swap?)
    # Two printings whose small print leans one way look after look, each too little to decide
    # alone (edge.recognize.reprints.DETAIL_CLEAR): the printing is proven once the leans of this many
    # looks at least sum to this much (two clear looks' worth); leans the other way subtract.
    lean_looks: int = 3
    lean_total: float = 0.06


@dataclass(frozen=True, slots=True)
class TrackEvent:
    kind: EventKind
    track_id: int
    frame_id: int
    t: float  # monotonic seconds of the frame's capture
    card_id: str | None  # voted card id; None while unknown
    score: float  # mean cosine of the winning votes, 0 when unknown
    known: bool


@dataclass(frozen=True, slots=True)
class TrackedCard:
    """A snapshot of one confirmed track for /v1/scene."""

    track_id: int
    box: OrientedBox
    card_id: str | None
    score: float
    known: bool
    identified: bool
    votes: int
    age_frames: int
    top_k: tuple[Candidate, ...]
    verified: bool = False  # its card was proven by geometry (the track's verdicts)
    back: bool = False  # a card lying face down


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of association for one frame: box i belongs to track_ids[i]."""

    frame_id: int
    t: float
    boxes: tuple[OrientedBox, ...]
    track_ids: tuple[int, ...]
    to_embed: tuple[int, ...]  # indices into boxes that need an embedding this frame


@dataclass(slots=True)
class _Track:
    track_id: int
    box: OrientedBox
    first_frame: int
    velocity: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(2, np.float32))
    hits: int = 1
    misses: int = 0
    announced: bool = False
    votes: deque[tuple[str, float, bool]] = field(default_factory=deque)
    last_embed_frame: int = -(10**9)
    embed_box: OrientedBox | None = None
    identity: tuple[str | None, float, bool] = (None, 0.0, False)
    identified: bool = False
    top_k: tuple[Candidate, ...] = ()
    verified: str | None = None  # a card id proven by geometry in this track: settles the vote
    proofs: dict[str, int] = field(default_factory=dict)  # verified verdicts per card id
    printed: bool = False  # the latest proof named one of several printings of its art
    background: bool = False  # its latest verdict: not a card (never announced while so)
    face_down: bool = False  # its latest verdict: a card back (announced, never named)
    returned: int | None = None  # frame it was seen again after missed frames (a swap?)
    leans: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # per printing pair

    def settled(self, cfg: TrackerConfig) -> tuple[tuple[str | None, float, bool], bool]:
        """The track's vote; a geometric verification of the winner settles it at once."""
        identity, settled = vote(self.votes, cfg.min_votes, cfg.min_share)
        return identity, settled or self.proven(identity[0])

    def proven(self, card_id: str | None) -> bool:
        """Geometry proved card_id in this track: once, or twice for one of several printings of
        its art (the small print that tells them apart is what a poor look gets wrong)."""
        return (
            card_id is not None
            and card_id == self.verified
            and (not self.printed or self.proofs.get(card_id, 0) >= 2)
        )


def vote(
    votes: deque[tuple[str, float, bool]], min_votes: int, min_share: float
) -> tuple[tuple[str | None, float, bool], bool]:
    """Score-weighted vote over known verdicts -> ((card_id, mean score, known), settled)."""
    weights: dict[str, list[float]] = {}
    total = 0.0
    for card_id, score, known in votes:
        w = max(score, 0.0)
        total += w
        if known:
            weights.setdefault(card_id, []).append(w)
    if not weights or total <= 0:
        return (None, 0.0, False), len(votes) >= min_votes
    winner, scores = max(weights.items(), key=lambda kv: sum(kv[1]))
    share = sum(scores) / total
    settled = len(votes) >= min_votes and share >= min_share
    known = share >= min_share
    return ((winner if known else None), float(np.mean(scores)), known), settled


class Tracker:
    """Two phases per frame: `plan` (associate, choose what to embed) then `commit` (votes)."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: dict[int, _Track] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._tracks)

    def plan(self, boxes: list[OrientedBox], frame_id: int, t: float) -> Plan:
        """Associate `boxes` with tracks (creating new ones) and pick the boxes to embed."""
        assigned = self._associate(boxes)
        track_ids: list[int] = []
        to_embed: list[int] = []
        for i, box in enumerate(boxes):
            tid = assigned.get(i)
            if tid is None:
                track = _Track(self._next_id, box, frame_id)
                self._tracks[track.track_id] = track
                self._next_id += 1
            else:
                track = self._tracks[tid]
                new_c, old_c = centre(box.corners), centre(track.box.corners)
                track.velocity = (0.5 * track.velocity + 0.5 * (new_c - old_c)).astype(np.float32)
                if track.misses > 0:
                    track.returned = frame_id
                track.box, track.hits, track.misses = box, track.hits + 1, 0
            track_ids.append(track.track_id)
            if self._needs_embedding(track, frame_id):
                to_embed.append(i)
        return Plan(frame_id, t, tuple(boxes), tuple(track_ids), tuple(to_embed))

    def commit(
        self, plan: Plan, verdicts: dict[int, tuple[Match, tuple[Candidate, ...]]]
    ) -> list[TrackEvent]:
        """Record the verdicts of the embedded boxes, age unseen tracks, and return the events."""
        cfg, events = self.config, []
        seen = set(plan.track_ids)
        for i, tid in enumerate(plan.track_ids):
            track = self._tracks[tid]
            if i in verdicts:
                match, top_k = verdicts[i]
                printing = self._leaned(track, match)
                if printing is not None:  # the looks' small print proved it between two
                    match = replace(match, card_id=printing, known=True, confidence="verified")
                if self._swapped(track, match, plan.frame_id):
                    if track.announced:
                        events.append(self._event("card_left", track, plan))
                    leans = track.leans
                    track = self._restart(track, plan.frame_id)
                    track.leans = leans  # the looks that proved the new card
                    seen.add(track.track_id)
                track.background = match.reason == BACKGROUND
                track.face_down = match.confidence == "back"
                if not track.background:  # background is no vote, only a reason to look less
                    track.votes.append((match.card_id, match.score, match.known))
                if printing is not None:  # the looks before this one count as one proof
                    track.proofs[printing] = track.proofs.get(printing, 0) + 1
                if match.confidence == "verified":
                    track.verified, track.printed = match.card_id, match.printings > 0
                    track.proofs[match.card_id] = track.proofs.get(match.card_id, 0) + 1
                    # proven by geometry: the looks that could prove nothing no longer count
                    kept = [v for v in track.votes if v[2]]
                    track.votes.clear()
                    track.votes.extend(kept)
                while len(track.votes) > cfg.window:
                    track.votes.popleft()
                track.last_embed_frame, track.embed_box, track.top_k = (
                    plan.frame_id,
                    track.box,
                    top_k,
                )
            if not track.announced and not track.background and track.hits >= cfg.min_hits:
                track.announced = True
                events.append(self._event("card_appeared", track, plan))
            identity, settled = track.settled(cfg)
            changed = identity[0] != track.identity[0] or identity[2] != track.identity[2]
            track.identity = identity
            if track.announced and settled and (changed or not track.identified):
                track.identified = True
                events.append(self._event("card_identified", track, plan))
        for tid in [t for t in self._tracks if t not in seen]:
            track = self._tracks[tid]
            track.misses += 1
            if track.misses > cfg.max_misses:
                del self._tracks[tid]
                if track.announced:
                    events.append(self._event("card_left", track, plan))
        return events

    def snapshot(self) -> list[TrackedCard]:
        """Confirmed tracks seen in the latest frame, oldest first."""
        return [
            TrackedCard(
                track_id=tr.track_id,
                box=tr.box,
                card_id=tr.identity[0],
                score=tr.identity[1],
                known=tr.identity[2],
                identified=tr.identified,
                votes=len(tr.votes),
                age_frames=tr.hits,
                top_k=tr.top_k,
                verified=tr.identity[2]
                and tr.verified is not None
                and tr.verified == tr.identity[0],
                back=tr.face_down,
            )
            for tr in sorted(self._tracks.values(), key=lambda tr: tr.track_id)
            if tr.announced and tr.misses == 0 and not tr.background
        ]

    def reset(self) -> list[TrackEvent]:
        """Forget every track (e.g. after a bundle swap); announced ones leave."""
        gone = [tr for tr in self._tracks.values() if tr.announced]
        self._tracks.clear()
        return [
            TrackEvent(
                "card_left", tr.track_id, -1, 0.0, tr.identity[0], tr.identity[1], tr.identity[2]
            )
            for tr in gone
        ]

    def _leaned(self, track: _Track, match: Match) -> str | None:
        """The printing the track's looks lean to, once they prove it (TrackerConfig.lean_*),
        from this undecided look's lean between its card and runner-up; else None."""
        if match.known or not match.runner_up or not match.lean:
            return None
        a, b = sorted((match.card_id, match.runner_up))
        leans = track.leans.setdefault((a, b), [])
        leans.append(match.lean if match.card_id == a else -match.lean)
        total = sum(leans)
        if len(leans) < self.config.lean_looks or abs(total) < self.config.lean_total:
            return None
        return a if total > 0 else b

    def _rechecking(self, track: _Track, frame_id: int) -> bool:
        if track.returned is not None and frame_id - track.returned > self.config.recheck_frames:
            track.returned = None
        return track.returned is not None

    def _swapped(self, track: _Track, match: Match, frame_id: int) -> bool:
        """Back after a gap, and geometry proves another card than the track had proven."""
        return (
            self._rechecking(track, frame_id)
            and track.verified is not None
            and match.confidence == "verified"
            and match.card_id != track.verified
        )

    def _restart(self, old: _Track, frame_id: int) -> _Track:
        """A new track (new id, no votes) in place of `old`, confirmed at once."""
        del self._tracks[old.track_id]
        track = _Track(self._next_id, old.box, frame_id, hits=max(old.hits, self.config.min_hits))
        self._tracks[track.track_id] = track
        self._next_id += 1
        return track

    def _needs_embedding(self, track: _Track, frame_id: int) -> bool:
        cfg = self.config
        if track.embed_box is None or self._rechecking(track, frame_id):
            return True
        _, settled = track.settled(cfg)
        settled = settled or track.background  # looked at, and not a card: look again on change
        since = frame_id - track.last_embed_frame
        if not settled or since >= cfg.refresh_every:
            return True
        if not track.identity[2] and not track.background and since >= cfg.unknown_every:
            return True
        if track.proven(track.identity[0]):
            return False  # proven by geometry: moving the card does not change what it is
        return polygon_iou(track.box.corners, track.embed_box.corners) < cfg.reembed_iou

    def _associate(self, boxes: list[OrientedBox]) -> dict[int, int]:
        """Greedy one-to-one matching on IoU plus predicted-centre closeness; box -> track id."""
        cfg = self.config
        pairs: list[tuple[float, int, int]] = []
        for tid, track in self._tracks.items():
            predicted = centre(track.box.corners) + track.velocity
            gate = cfg.max_centre_jump * diagonal(track.box.corners)
            for i, box in enumerate(boxes):
                dist = float(np.linalg.norm(centre(box.corners) - predicted))
                iou = polygon_iou(track.box.corners, box.corners)
                if iou < cfg.min_iou and dist > gate:
                    continue
                closeness = max(0.0, 1.0 - dist / gate) if gate > 0 else 0.0
                pairs.append((iou + 0.5 * closeness, i, tid))
        pairs.sort(reverse=True)
        used_boxes: set[int] = set()
        result: dict[int, int] = {}
        for _, i, tid in pairs:
            if i in used_boxes or tid in result.values():
                continue
            used_boxes.add(i)
            result[i] = tid
        return result

    @staticmethod
    def _event(kind: EventKind, track: _Track, plan: Plan) -> TrackEvent:
        card_id, score, known = track.identity
        return TrackEvent(kind, track.track_id, plan.frame_id, plan.t, card_id, score, known)
