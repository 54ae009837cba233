"""Caption metrics: corpus BLEU, ROUGE-L and CIDEr-D.

Every metric takes ``candidates`` (one generated caption per image) and ``references`` (a non-empty list of
reference captions per image, aligned with ``candidates``) and tokenises with ``tokenize``: lowercase, then split on
whitespace. Punctuation stays attached to words ("dog." and "dog" differ); the COCO caption evaluation code runs the
PTB tokenizer first, which strips punctuation, so strip it beforehand to reproduce published COCO numbers.

Variants:

- ``corpus_bleu``: BLEU of Papineni et al. (2002) at corpus level: clipped n-gram matches and candidate n-gram
  counts each summed over the corpus, uniform weights over orders 1..``max_order``, brevity penalty from the summed
  closest reference lengths (a tie between references goes to the shorter one). Without smoothing any order with no
  match gives 0; this equals sacrebleu's ``BLEU(tokenize="none", smooth_method="none")`` on pre-tokenised text.
  ``smoothing=True`` is method 1 of Chen & Cherry (2014) with epsilon 0.1 (NLTK's ``SmoothingFunction().method1``):
  an order with no match counts 0.1 matches instead; no unigram match at all still gives 0, as in NLTK. NLTK's
  ``corpus_bleu`` agrees whenever every candidate has at least ``max_order`` tokens; for shorter ones NLTK counts
  one phantom n-gram per candidate and order. COCO's ``bleu_scorer`` adds 1e-15 / 1e-9 to every count instead of
  returning 0, which matters only when some order has no match.
- ``rouge_l``: the COCO caption evaluation's ROUGE-L: LCS-based precision and recall against each reference, the
  maximum precision and the maximum recall over references (taken separately), combined as
  ``F = (1 + b^2) P R / (R + b^2 P)`` with ``b = 1.2``; 0 when either is 0. Corpus score is the mean over images.
- ``cider_d``: CIDEr-D as in the COCO caption evaluation (``pycocoevalcap/cider``): n-grams 1..4 weighted by tf-idf,
  idf from the references of the evaluated corpus (``log(images) - log(max(1, df))``), candidate tf-idf clipped at
  the reference's (``min(c, r) * r``), cosine per order, a gaussian length penalty ``exp(-delta^2 / (2 * 6^2))``,
  mean over orders, mean over references, times 10, then mean over images. As in that code, ``delta`` is the
  difference in bigram counts, which equals the difference in lengths for captions of two words or more. Because
  idf comes from the corpus, a one-image corpus always scores 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

Ngram = tuple[str, ...]

ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0
BLEU_SMOOTHING_EPSILON = 0.1


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it on whitespace."""
    return text.lower().split()


def corpus_bleu(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    max_order: int = 4,
    smoothing: bool = False,
) -> float:
    """Corpus-level BLEU-``max_order`` in [0, 1] (see the module docstring for the exact variant)."""
    candidate_tokens, reference_tokens = _tokenize_corpus(candidates, references)
    if max_order < 1:
        raise ValueError(f"max_order must be at least 1, got {max_order}")
    matches = [0] * max_order
    totals = [0] * max_order
    candidate_length = reference_length = 0
    for candidate, refs in zip(candidate_tokens, reference_tokens, strict=True):
        candidate_length += len(candidate)
        reference_length += min((abs(len(ref) - len(candidate)), len(ref)) for ref in refs)[1]
        for order in range(1, max_order + 1):
            counts = _ngram_counts(candidate, order)
            max_reference_counts: Counter[Ngram] = Counter()
            for ref in refs:
                max_reference_counts |= _ngram_counts(ref, order)
            matches[order - 1] += sum((counts & max_reference_counts).values())
            totals[order - 1] += max(0, len(candidate) - order + 1)
    if candidate_length == 0 or matches[0] == 0:
        return 0.0
    log_precision_sum = 0.0
    for matched, total in zip(matches, totals, strict=True):
        if matched == 0 and not smoothing:
            return 0.0
        smoothed = matched if matched else BLEU_SMOOTHING_EPSILON
        log_precision_sum += math.log(smoothed / max(1, total))
    brevity_penalty = 1.0 if candidate_length > reference_length else math.exp(1 - reference_length / candidate_length)
    return brevity_penalty * math.exp(log_precision_sum / max_order)


def rouge_l(candidates: Sequence[str], references: Sequence[Sequence[str]], *, beta: float = ROUGE_BETA) -> float:
    """Mean ROUGE-L F-measure over images, COCO variant (see the module docstring); an empty caption scores 0."""
    candidate_tokens, reference_tokens = _tokenize_corpus(candidates, references)
    scores = []
    for candidate, refs in zip(candidate_tokens, reference_tokens, strict=True):
        lcs = [_lcs_length(candidate, ref) for ref in refs]
        precision = max((n / len(candidate) if candidate else 0.0) for n in lcs)
        recall = max((n / len(ref) if ref else 0.0) for n, ref in zip(lcs, refs, strict=True))
        if precision == 0 or recall == 0:
            scores.append(0.0)
        else:
            scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
    return float(np.mean(scores))


def cider_d(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    max_order: int = 4,
    sigma: float = CIDER_SIGMA,
) -> float:
    """Mean CIDEr-D over images, as the COCO caption evaluation computes it (see the module docstring)."""
    candidate_tokens, reference_tokens = _tokenize_corpus(candidates, references)
    candidate_counts = [_all_ngram_counts(tokens, max_order) for tokens in candidate_tokens]
    reference_counts = [[_all_ngram_counts(tokens, max_order) for tokens in refs] for refs in reference_tokens]
    document_frequency: Counter[Ngram] = Counter()
    for refs in reference_counts:
        document_frequency.update({ngram for counts in refs for ngram in counts})
    log_images = math.log(len(candidate_tokens))

    def tf_idf(counts: Counter[Ngram]) -> tuple[list[dict[Ngram, float]], list[float], int]:
        vectors: list[dict[Ngram, float]] = [{} for _ in range(max_order)]
        for ngram, term_frequency in counts.items():
            vectors[len(ngram) - 1][ngram] = term_frequency * (
                log_images - math.log(max(1.0, document_frequency[ngram]))
            )
        norms = [math.sqrt(sum(w * w for w in vector.values())) for vector in vectors]
        bigrams = sum(counts[ngram] for ngram in vectors[1]) if max_order > 1 else 0
        return vectors, norms, bigrams

    scores = []
    for counts, refs in zip(candidate_counts, reference_counts, strict=True):
        vectors, norms, bigrams = tf_idf(counts)
        total = np.zeros(max_order)
        for ref in refs:
            ref_vectors, ref_norms, ref_bigrams = tf_idf(ref)
            penalty = math.exp(-((bigrams - ref_bigrams) ** 2) / (2 * sigma**2))
            for order in range(max_order):
                ref_vector = ref_vectors[order]
                dot = sum(
                    min(weight, ref_vector.get(ngram, 0.0)) * ref_vector.get(ngram, 0.0)
                    for ngram, weight in vectors[order].items()
                )
                if norms[order] and ref_norms[order]:
                    dot /= norms[order] * ref_norms[order]
                total[order] += dot * penalty
        scores.append(float(np.mean(total)) / len(refs) * 10.0)
    return float(np.mean(scores))


def _tokenize_corpus(
    candidates: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[list[list[str]], list[list[list[str]]]]:
    if isinstance(candidates, str) or any(isinstance(refs, str) for refs in references):
        raise TypeError("candidates must be a sequence of captions and references a sequence of caption lists")
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        raise ValueError("the corpus is empty")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every candidate needs at least one reference")
    return [tokenize(c) for c in candidates], [[tokenize(r) for r in refs] for refs in references]


def _ngram_counts(tokens: Sequence[str], order: int) -> Counter[Ngram]:
    return Counter(tuple(tokens[i : i + order]) for i in range(len(tokens) - order + 1))


def _all_ngram_counts(tokens: Sequence[str], max_order: int) -> Counter[Ngram]:
    counts: Counter[Ngram] = Counter()
    for order in range(1, max_order + 1):
        counts.update(_ngram_counts(tokens, order))
    return counts


def _lcs_length(first: Sequence[str], second: Sequence[str]) -> int:
    """Length of the longest common subsequence, by dynamic programming over one row."""
    previous = [0] * (len(second) + 1)
    for token in first:
        current = [0]
        for j, other in enumerate(second, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]
