"""The judge: score a result, then decide where the envelope goes next.

An envelope-mode handler (``handlerMode: envelope``), because deciding the route is its
job. The score comes from an LLM through litellm (any provider; vision models see the
original and the enhanced image) or, with no API key, from image statistics
(:mod:`actors.judge.heuristics`). Then, with ``accept`` and ``reject`` thresholds:

- score >= accept: **accept**, the route goes on unchanged (e.g. to ``upload``);
- score <  reject: **reject**, ``retry_route`` (``[enhance, judge]``) is put in front of
  the rest, with ``enhance_settings`` adjusted for the defects found, at most
  ``max_loops`` times; after that the envelope goes to review instead;
- in between: **uncertain**, the review actor is put in front of the rest; so is a
  heuristic score above ``accept`` that comes with a defect a person would see
  (:data:`~actors.judge.heuristics.VISIBLE_DEFECTS`, e.g. a colour cast the enhancer
  could not remove): statistics may miss a defect, but one they name is not uploaded.

The verdict is stored in ``payload["verdict"]`` (and appended to
``payload["judge_history"]``); loops are counted in ``payload["judge_loops"]``, so an
envelope read from any queue or store says how often it went round.

Best-of-N splits the two halves over two actors: ``Judge.score_candidate`` (payload
mode) scores each candidate and leaves the route alone, a ``fanIn`` actor keeps the
best, and ``Judge.decide`` (envelope mode) routes the best on the verdict it carries,
as ``judge`` would have.

``mode: text`` judges ``payload["answer"]`` to ``payload["question"]`` instead, which is
how the same template drives a question-answering loop (``mesh/qa-loop``).

The images are read within the actor's storage policy (``storage``, given by the
runtime from the mesh and the actor's ``spec.storage``), so a payload cannot make the
judge read a file outside the allowed folders and buckets.

Provider errors (429, 5xx, timeouts) propagate untouched for the manifest's policies; an
answer that is not a valid verdict raises :class:`VerdictError` naming the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.judge.heuristics import VISIBLE_DEFECTS, Scored, score_image, score_text
from actors.judge.llm import (
    Verdict,
    VerdictError,
    complete,
    data_url,
    load_litellm,
    parse_verdict,
)

if TYPE_CHECKING:
    from asya_agents.storage import StoragePolicy

__all__ = ["DEFAULT_ADJUSTMENTS", "Judge", "Verdict", "VerdictError"]

IMAGE_PROMPT = """You judge enhanced food photographs for a food-delivery menu.
You get the original photo and the enhanced one (or statistics of both). Judge the
enhanced photo: appetising, true-to-life colours, well exposed, sharp, no artefacts,
same dish as the original. Answer with one JSON object and nothing else:
{"score": <0..1>, "verdict": "accept" | "uncertain" | "reject",
 "reasons": [<short strings>], "defects": [<from: underexposed, overexposed,
 low_contrast, blurry, dull_colours, colour_cast, over_processed, unchanged, artefacts>]}"""

TEXT_PROMPT = """You judge answers to questions. Score how correct, complete and clear
the answer is. Answer with one JSON object and nothing else:
{"score": <0..1>, "verdict": "accept" | "uncertain" | "reject",
 "reasons": [<short strings>], "defects": [<e.g. wrong, incomplete, too_short,
 off_topic, evasive>]}"""

#: How each defect changes the enhancer's settings on a reject: a step added to the value
#: the enhancer last used (``payload["enhancement"]["settings"]``, see
#: actors/enhance/README.md), kept within ``LIMITS``.
DEFAULT_ADJUSTMENTS: dict[str, dict[str, float]] = {
    "underexposed": {"exposure": 0.08},
    "overexposed": {"exposure": -0.08},
    "low_contrast": {"contrast": 0.12},
    "blurry": {"sharpen": 60.0},
    "dull_colours": {"saturation": 0.15},
    "colour_cast": {"white_balance": 0.2},
    "blown_highlights": {"exposure": -0.06},
    "crushed_shadows": {"exposure": 0.05},
    "over_saturated": {"saturation": -0.2},
    "unchanged": {"strength": 0.1},
    "over_processed": {"strength": -0.1},
}
LIMITS: dict[str, tuple[float, float]] = {
    "exposure": (0.05, 0.95), "white_balance": (0.0, 1.0), "strength": (0.05, 1.0),
    "contrast": (0.5, 2.0), "saturation": (0.5, 2.5), "sharpen": (0.0, 400.0),
}


class Judge:
    """Built once per replica with ``spec.config`` (every key: actors/judge/README.md)."""

    def __init__(
        self,
        *,
        backend: str = "auto",
        mode: str = "image",
        model: str | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        accept: float = 0.8,
        reject: float = 0.5,
        max_loops: int = 2,
        vision: bool = True,
        prompt: str | None = None,
        retry_route: list[str] | None = None,
        review_actor: str = "review",
        timeout: float = 60.0,
        json_mode: bool = True,
        image_max_side: int = 768,
        adjustments: dict[str, dict[str, float]] | None = None,
        context_keys: list[str] | None = None,
        storage: StoragePolicy | None = None,
    ) -> None:
        if not 0.0 <= reject <= accept <= 1.0:
            raise ValueError(f"need 0 <= reject <= accept <= 1, got reject={reject}, "
                             f"accept={accept}")
        if max_loops < 0:
            raise ValueError(f"max_loops must be >= 0, got {max_loops}")
        if mode not in ("image", "text"):
            raise ValueError(f"mode must be 'image' or 'text', got {mode!r}")
        self.mode = mode
        self.accept, self.reject, self.max_loops = accept, reject, max_loops
        self.vision, self.timeout, self.json_mode = vision, timeout, json_mode
        self.image_max_side = image_max_side
        self.retry_route = list(retry_route or (["enhance", "judge"] if mode == "image"
                                                else ["answer", "judge"]))
        self.review_actor = review_actor
        self.prompt = prompt or (IMAGE_PROMPT if mode == "image" else TEXT_PROMPT)
        self.adjustments = DEFAULT_ADJUSTMENTS if adjustments is None else adjustments
        self.context_keys = ["dish", "title", "photo"] if context_keys is None else context_keys
        self.model, self.api_base, self.api_key = model, api_base, api_key
        self.backend = self._pick_backend(backend)
        if self.backend == "llm":
            load_litellm()  # at startup, in one thread; a missing package fails here
        self.storage = storage
        self._blob: Any = None  # one S3 client per replica, made on first use

    def _pick_backend(self, backend: str) -> str:
        if backend not in ("auto", "llm", "heuristic"):
            raise ValueError(f"backend must be 'auto', 'llm' or 'heuristic', got {backend!r}")
        if backend != "heuristic":
            from asya_agents.settings import LLMSettings

            llm = LLMSettings()
            self.model = self.model or llm.model
            self.api_base = self.api_base or llm.api_base
            self.api_key = self.api_key or llm.api_key
        if backend == "auto":
            return "llm" if self.api_key else "heuristic"
        return backend

    # -- the handler ------------------------------------------------------------------

    def judge(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Envelope mode: score the payload, then route it (accept, loop or review)."""
        payload = dict(envelope["payload"])
        payload["verdict"] = self.verdict(payload)
        return self._route(envelope, payload)

    def score_candidate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Payload mode: score one candidate of a best-of-N and record the verdict in
        ``payload["verdict"]``; the route is left alone (the gather that follows keeps
        the best, and :meth:`decide` routes it)."""
        return {**payload, "verdict": self.verdict(payload)}

    def decide(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Envelope mode: route on the verdict already in ``payload["verdict"]`` (the
        best candidate's), exactly as :meth:`judge` routes its own; nothing is scored
        again."""
        payload = dict(envelope["payload"])
        verdict = payload.get("verdict")
        if not isinstance(verdict, dict) or not isinstance(verdict.get("score"), int | float) \
                or verdict.get("verdict") not in ("accept", "uncertain", "reject"):
            raise ValueError("judge.decide routes on payload['verdict'] with a 'score' and "
                             "a 'verdict' (accept, uncertain, reject), as score_candidate "
                             f"writes it; got {verdict!r}")
        payload["verdict"] = {**verdict, "reasons": list(verdict.get("reasons") or []),
                              "defects": list(verdict.get("defects") or [])}
        return self._route(envelope, payload)

    def verdict(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The verdict on ``payload`` as it is recorded: score, label, reasons, defects,
        backend, the loop it was given in, the model and the statistics."""
        verdict, stats = self.score(payload)
        label = self.label(verdict.score)
        reasons = list(verdict.reasons)
        seen = [d for d in verdict.defects if d in VISIBLE_DEFECTS]
        if label == "accept" and self.backend == "heuristic" and seen:
            label = "uncertain"  # statistics that see a defect do not wave it through
            reasons.append(f"accepted by score, but {', '.join(seen)}: a person decides")
        return {"score": verdict.score, "verdict": label, "reasons": reasons,
                "defects": verdict.defects, "backend": self.backend,
                "loop": int(payload.get("judge_loops", 0)),
                "model": self.model if self.backend == "llm" else None, "stats": stats}

    def _route(self, envelope: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        record = payload["verdict"]
        label, loops = record["verdict"], int(payload.get("judge_loops", 0))
        rest = list(envelope["route"]["next"])
        if label == "accept":
            nxt = rest
        elif label == "reject" and loops < self.max_loops:
            nxt = [*self.retry_route, *rest]
            payload["judge_loops"] = loops + 1
            payload["judge_feedback"] = record["reasons"] + [
                f"defect: {d}" for d in record["defects"]]
            if self.mode == "image":
                payload["enhance_settings"] = self.adjust(payload, record["defects"])
        else:
            if label == "reject":
                record["reasons"].append(f"still rejected after {loops} loop(s): a person "
                                         "decides")
            nxt = [self.review_actor, *rest]
        payload["judge_history"] = [*payload.get("judge_history", []),
                                    {"score": record["score"], "verdict": label}]
        return {**envelope, "payload": payload,
                "route": {**envelope["route"], "next": nxt}}

    def label(self, score: float) -> str:
        if score >= self.accept:
            return "accept"
        return "reject" if score < self.reject else "uncertain"

    def adjust(self, payload: dict[str, Any], defects: list[str]) -> dict[str, Any]:
        """The overrides for the next enhancement: the previous overrides, plus one step
        per defect on the value the enhancer last used. Settings the enhancer did not
        report (or that it turned off) are left alone."""
        overrides = dict(payload.get("enhance_settings") or {})
        enhancement = payload.get("enhancement")
        used = enhancement.get("settings", {}) if isinstance(enhancement, dict) else {}
        current = {**used, **overrides}
        for defect in defects:
            for key, step in self.adjustments.get(defect, {}).items():
                value = current.get(key)
                if not isinstance(value, int | float):
                    continue
                low, high = LIMITS.get(key, (float("-inf"), float("inf")))
                current[key] = overrides[key] = round(min(max(value + step, low), high), 4)
        return overrides

    # -- scoring ------------------------------------------------------------------------

    def score(self, payload: dict[str, Any]) -> tuple[Verdict, dict[str, Any]]:
        """The verdict on ``payload`` and the statistics it rests on."""
        if self.mode == "text":
            question, answer = str(payload.get("question", "")), str(payload.get("answer", ""))
            if self.backend == "heuristic":
                return _verdict(score_text(question, answer)), {}
            return self._ask([{"type": "text",
                               "text": f"Question: {question}\n\nAnswer: {answer}"}]), {}
        original, enhanced = self._images(payload)
        scored = score_image(enhanced, original)
        if self.backend == "heuristic":
            return _verdict(scored), scored.stats
        content = self._image_content(original, enhanced, scored)
        context = [f"{k}: {payload[k]}" for k in self.context_keys if payload.get(k)]
        if context:  # what the photo shows helps a model judge it
            content.insert(0, {"type": "text", "text": "\n".join(context)})
        return self._ask(content), scored.stats

    def _images(self, payload: dict[str, Any]) -> tuple[bytes | None, bytes]:
        for key in ("image_url", "enhanced_url"):
            if not payload.get(key):
                raise KeyError(f"the image judge needs payload[{key!r}] (got keys: "
                               f"{', '.join(sorted(payload))})")
        if self._blob is None:
            from asya_agents.blob import BlobStore

            self._blob = BlobStore(policy=self.storage)
        return (self._blob.read_bytes(payload["image_url"]),
                self._blob.read_bytes(payload["enhanced_url"]))

    def _image_content(self, original: bytes | None, enhanced: bytes,
                       scored: Scored) -> list[dict[str, Any]]:
        stats = {k: v for k, v in scored.stats.items() if k != "subscores"}
        text = (f"Statistics of the enhanced photo (change is the mean difference from "
                f"the original): {stats}")
        if not self.vision:
            return [{"type": "text", "text": text}]
        content: list[dict[str, Any]] = [{"type": "text", "text": "Original photo:"}]
        if original is not None:
            content.append({"type": "image_url", "image_url": {
                "url": data_url(original, max_side=self.image_max_side)}})
        content += [{"type": "text", "text": "Enhanced photo:"},
                    {"type": "image_url", "image_url": {
                        "url": data_url(enhanced, max_side=self.image_max_side)}},
                    {"type": "text", "text": text}]
        return content

    def _ask(self, content: list[dict[str, Any]]) -> Verdict:
        assert self.model is not None
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.prompt},
                    {"role": "user", "content": content}]
        text = complete(model=self.model, messages=messages, api_base=self.api_base,
                        api_key=self.api_key, timeout=self.timeout, json_mode=self.json_mode)
        return parse_verdict(text, model=self.model)


def _verdict(scored: Scored) -> Verdict:
    return Verdict(score=scored.score, reasons=scored.reasons, defects=scored.defects)
