"""An offline, IFEval-style instruction-following check: the OOD axis of the evaluation.

IFEval (Zhou et al., 2023) gives prompts with verifiable instructions ("answer in lowercase", "fewer
than 40 words", "end with 'See you soon.'") and scores prompt-level strict accuracy: a prompt counts
only if every instruction in it is followed. Its prompt set is fetched from the Hugging Face hub at
run time, which these machines cannot reach, and the PyPI packages that carry a verifier either carry
no prompts or download tokenizer data at import. So this module holds a small prompt set written in
the same style, 24 prompts over 16 of IFEval's instruction types, each with a deterministic checker.
Numbers from it are comparable across rounds of one run, not with published IFEval scores.
"""
import json
import re


def _words(text):
    return re.findall(r"\b\w+(?:'\w+)?\b", text)


def _sentences(text):
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def _strip_fence(text):
    text = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.S | re.I)
    return fence.group(1) if fence else text


# instruction type -> check(response, **arguments) -> bool
CHECKS = {
    "lowercase": lambda r: r.strip() != "" and r == r.lower(),
    "uppercase": lambda r: r.strip() != "" and r == r.upper(),
    "no_comma": lambda r: "," not in r,
    "max_words": lambda r, n: len(_words(r)) < n,
    "min_words": lambda r, n: len(_words(r)) >= n,
    "include_keywords": lambda r, words: all(re.search(rf"\b{re.escape(w)}\b", r, re.I) for w in words),
    "exclude_keywords": lambda r, words: not any(re.search(rf"\b{re.escape(w)}\b", r, re.I) for w in words),
    "keyword_count": lambda r, word, n: len(re.findall(rf"\b{re.escape(word)}\b", r, re.I)) >= n,
    "end_phrase": lambda r, phrase: r.strip().endswith(phrase),
    "start_word": lambda r, words: any(re.match(rf"\W*{re.escape(w)}\b", r.strip(), re.I) for w in words),
    "bullet_count": lambda r, n: len(re.findall(r"^\s*[*-]\s", r, re.M)) == n,
    "json": lambda r: _is_json(_strip_fence(r)),
    "title": lambda r: bool(re.search(r"<<[^<>\n]+>>", r)),
    "quoted": lambda r: len(r.strip()) > 1 and r.strip()[0] == '"' and r.strip()[-1] == '"',
    "paragraphs": lambda r, n: len([p for p in re.split(r"\s*\*\*\*\s*", r.strip()) if p.strip()]) == n and r.count("***") == n - 1,
    "postscript": lambda r: bool(re.search(r"^\s*P\.S\.", r, re.M)),
    "placeholders": lambda r, n: len(re.findall(r"\[[^\[\]]+\]", r)) >= n,
    "highlights": lambda r, n: len(re.findall(r"\*[^\n*]+\*", r)) >= n,
    "max_sentences": lambda r, n: 0 < len(_sentences(r)) <= n,
}


def _is_json(text):
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


# (prompt, [(instruction type, arguments)])
PROMPTS = [
    ("Write a short note to a friend about a picnic. Your entire response must be in lowercase letters.", [("lowercase", {})]),
    ("Describe a cat in three sentences. Do not use any commas in your response.", [("no_comma", {})]),
    ("Explain what rain is in fewer than 40 words.", [("max_words", {"n": 40})]),
    ("Write a description of the sea. Use at least 60 words.", [("min_words", {"n": 60})]),
    ("Write two sentences about winter that include the words 'snow' and 'quiet'.", [("include_keywords", {"words": ["snow", "quiet"]})]),
    ("Describe a city at night without using the word 'light'.", [("exclude_keywords", {"words": ["light"]})]),
    ("Write a short thank-you message to a teacher. End your response with the exact phrase 'See you soon.'", [("end_phrase", {"phrase": "See you soon."})]),
    ("Is water wet? Start your answer with the word 'Yes' or with the word 'No'.", [("start_word", {"words": ["Yes", "No"]})]),
    ("Name exactly 3 fruits. Use markdown bullet points such as:\n* apple", [("bullet_count", {"n": 3})]),
    ("Give the name and age of a made-up person as a JSON object. Output only the JSON.", [("json", {})]),
    ("Write a slogan for a bakery. Your entire response must be in English capital letters.", [("uppercase", {})]),
    ("Write a short poem about the moon. Give it a title wrapped in double angular brackets, like <<my title>>.", [("title", {})]),
    ("Say something kind about Mondays. Wrap your entire response in double quotation marks.", [("quoted", {})]),
    ("Write 2 paragraphs about dogs. Separate the paragraphs with the markdown divider ***", [("paragraphs", {"n": 2})]),
    ("Write a short email inviting a friend to lunch. At the end, add a postscript starting with P.S.", [("postscript", {})]),
    ("Write a template for a birthday card with at least 2 placeholders in square brackets, such as [name].", [("placeholders", {"n": 2})]),
    ("Explain why plants need sunlight. Highlight at least 2 parts of your answer with markdown, like *highlighted part*.", [("highlights", {"n": 2})]),
    ("Write about a garden. Use the word 'green' at least 3 times.", [("keyword_count", {"word": "green", "n": 3})]),
    ("Tell me about the sun in at most 2 sentences.", [("max_sentences", {"n": 2})]),
    ("Describe your favourite food in fewer than 30 words and in lowercase letters only.", [("max_words", {"n": 30}), ("lowercase", {})]),
    ("List exactly 2 reasons to read books as markdown bullet points, without using any commas.", [("bullet_count", {"n": 2}), ("no_comma", {})]),
    ("Write a riddle about a key. Include the word 'door' and end your response with the exact phrase 'What am I?'", [("include_keywords", {"words": ["door"]}), ("end_phrase", {"phrase": "What am I?"})]),
    ("Write a one-sentence weather report in capital letters, without the word 'rain'.", [("uppercase", {}), ("exclude_keywords", {"words": ["rain"]})]),
    ("Write a short story about a lost coin with a title in double angular brackets, like <<title>>, in at least 50 words.", [("title", {}), ("min_words", {"n": 50})]),
]


def check(response, instructions):
    """[followed?] for each (instruction type, arguments) of a prompt."""
    return [bool(CHECKS[kind](response, **arguments)) for kind, arguments in instructions]
