"""A generated evaluation set for passenger screening: list entries, labelled variants, hard negatives.

Nothing here is a real person: names are drawn from common name parts of eight cultures written
out below (with their native scripts and the romanisation systems in use), combined at random,
with generated surnames for variety, random dates of birth and document numbers. Romanisations are
produced by this module's own tables (ICAO 9303, BGN/PCGN, German and French systems for
Russian; several customary spellings for Arabic; pinyin and Wade-Giles for Chinese), not by ICU,
so the screening's ICU transliteration is tested against independent spellings.

`make_set(entries, passengers, seed)` returns the list and a manifest of ordinary passengers (and homonyms, see HOMONYM) with
labelled ones mixed in, each labelled with its variation type and, for positives, the entry it
should hit. Seeds 1 (training: weights and threshold) and 2 (held out: every reported number) keep
the two halves apart.
"""

from __future__ import annotations

import datetime as dt
import random
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from broker.api.v1 import payload_pb2
from clients.watchlist.screening import ScreeningRecord

# ---- Russian: Cyrillic parts and four romanisation systems ------------------------------------------
RU_GIVEN_M: Final = (
    "Александр",
    "Алексей",
    "Андрей",
    "Сергей",
    "Дмитрий",
    "Иван",
    "Михаил",
    "Николай",
    "Юрий",
    "Владимир",
    "Евгений",
    "Олег",
    "Павел",
    "Виктор",
    "Игорь",
    "Константин",
    "Григорий",
    "Фёдор",
    "Вячеслав",
    "Артём",
    "Максим",
    "Борис",
    "Василий",
    "Анатолий",
    "Тимур",
    "Ярослав",
    "Захар",
)
RU_GIVEN_F: Final = (
    "Елена",
    "Ольга",
    "Наталья",
    "Татьяна",
    "Юлия",
    "Ирина",
    "Светлана",
    "Екатерина",
    "Мария",
    "Анастасия",
    "Ксения",
    "Людмила",
    "Галина",
    "Дарья",
    "Жанна",
    "Яна",
    "Вера",
    "Надежда",
)
RU_FAMILY_ROOTS: Final = (
    "Иван",
    "Петр",
    "Смирн",
    "Кузнец",
    "Попов",
    "Соколов",
    "Лебед",
    "Козл",
    "Новик",
    "Морозов",
    "Волк",
    "Соловь",
    "Васил",
    "Зайц",
    "Павл",
    "Семён",
    "Голуб",
    "Виногра",
    "Богданов",
    "Воробь",
    "Фёдор",
    "Михайл",
    "Беляк",
    "Тарас",
    "Белов",
    "Комар",
    "Орл",
    "Киселёв",
    "Макар",
    "Андре",
    "Ковал",
    "Ильин",
    "Гусев",
    "Титов",
    "Кузьмин",
    "Кудрявц",
    "Баран",
    "Куликов",
    "Алексе",
    "Степан",
    "Яковл",
    "Сорокин",
    "Серге",
    "Роман",
    "Захар",
    "Борис",
    "Королёв",
    "Герасим",
    "Пономар",
    "Григорь",
    "Лазар",
    "Медвед",
    "Ершов",
    "Никитин",
    "Соболев",
    "Рябов",
    "Поляков",
    "Цветков",
    "Данилов",
    "Жуков",
    "Фролов",
    "Журавлёв",
    "Николаев",
    "Крылов",
    "Максимов",
    "Сидор",
    "Осипов",
    "Белоусов",
    "Федот",
    "Дорофе",
    "Егор",
    "Матве",
    "Бобров",
    "Дмитри",
    "Калинин",
    "Анисимов",
    "Петух",
    "Антонов",
    "Тимофе",
    "Никифор",
    "Веселов",
    "Филипп",
    "Марков",
    "Большаков",
    "Суханов",
    "Миронов",
    "Ширяев",
    "Александр",
    "Коновал",
    "Шестаков",
    "Казаков",
    "Ефимов",
    "Денисов",
    "Громов",
    "Фомин",
    "Давыдов",
    "Мельник",
    "Щербак",
    "Блинов",
    "Колесник",
    "Карпов",
    "Афанасьев",
    "Власов",
    "Маслов",
    "Исаков",
    "Тихонов",
    "Аксён",
    "Гаврил",
    "Родион",
    "Котов",
    "Горбун",
    "Кудряш",
    "Быков",
    "Зуев",
    "Третьяков",
    "Савель",
    "Панов",
    "Рыбаков",
    "Суворов",
    "Абрамов",
    "Воронов",
    "Мухин",
    "Архип",
    "Трофим",
    "Мартын",
    "Емельян",
    "Горшков",
    "Чернов",
    "Овчинник",
    "Селезнёв",
    "Панфил",
    "Копылов",
    "Михе",
    "Галкин",
    "Назаров",
    "Лобанов",
    "Лукин",
    "Беляков",
    "Потапов",
    "Некрас",
    "Хохлов",
    "Жданов",
    "Наумов",
    "Шилов",
    "Воронцов",
    "Ермаков",
    "Дроздов",
    "Игнать",
    "Савин",
    "Логинов",
    "Сафонов",
    "Капустин",
    "Кириллов",
    "Моисе",
    "Елисе",
    "Кошелев",
    "Костин",
    "Горбачёв",
    "Орехов",
    "Ефремов",
    "Исаев",
    "Евдоким",
    "Калашник",
    "Кабанов",
    "Носков",
    "Юдин",
    "Кулагин",
    "Лапин",
    "Прохоров",
    "Нестеров",
    "Харитонов",
    "Агафонов",
    "Муравьёв",
    "Ларионов",
    "Федосе",
    "Зимин",
    "Пахомов",
    "Шубин",
    "Игнатов",
    "Филатов",
    "Крюков",
    "Рогов",
    "Кулаков",
    "Терентьев",
    "Молчанов",
    "Владимир",
    "Артемьев",
    "Гурьев",
    "Зиновьев",
    "Гришин",
    "Кононов",
    "Дементьев",
    "Ситников",
    "Симонов",
    "Мишин",
    "Фадеев",
    "Комиссаров",
    "Мамонтов",
    "Носов",
    "Гуляев",
    "Шаров",
    "Устинов",
    "Вишняк",
    "Евсеев",
    "Лаврентьев",
    "Брагин",
    "Константинов",
    "Корнилов",
    "Авдеев",
    "Зыков",
    "Бирюков",
    "Шарапов",
    "Никонов",
    "Щукин",
    "Дьячков",
    "Одинцов",
    "Сазонов",
    "Якушев",
    "Красильник",
    "Гордеев",
    "Самойлов",
    "Князев",
    "Беспалов",
    "Уваров",
    "Шашков",
    "Бобыл",
    "Доронин",
    "Белозёр",
    "Рожков",
    "Самсонов",
    "Мясников",
    "Лихачёв",
    "Буров",
    "Сысоев",
    "Фомичёв",
    "Русаков",
    "Стрелков",
    "Гущин",
    "Тетерин",
    "Колобов",
    "Субботин",
    "Фокин",
    "Блохин",
    "Селиверстов",
    "Пестов",
    "Кондратьев",
    "Силин",
    "Меркушев",
    "Лыткин",
    "Туров",
)
_RU_SUFFIX: Final = ("ов", "ев", "ин", "ский")

_RU_COMMON: Final = {
    "а": "a",
    "б": "b",
    "в": "v",
    "г": "g",
    "д": "d",
    "з": "z",
    "и": "i",
    "к": "k",
    "л": "l",
    "м": "m",
    "н": "n",
    "о": "o",
    "п": "p",
    "р": "r",
    "с": "s",
    "т": "t",
    "у": "u",
    "ф": "f",
    "ь": "",
    "ъ": "",
}
RU_SYSTEMS: Final[dict[str, dict[str, str]]] = {
    "icao": {
        **_RU_COMMON,
        "е": "e",
        "ё": "e",
        "ж": "zh",
        "й": "i",
        "х": "kh",
        "ц": "ts",
        "ч": "ch",
        "ш": "sh",
        "щ": "shch",
        "ы": "y",
        "э": "e",
        "ю": "iu",
        "я": "ia",
        "ъ": "ie",
    },
    "bgn": {
        **_RU_COMMON,
        "е": "e",
        "ё": "e",
        "ж": "zh",
        "й": "y",
        "х": "kh",
        "ц": "ts",
        "ч": "ch",
        "ш": "sh",
        "щ": "shch",
        "ы": "y",
        "э": "e",
        "ю": "yu",
        "я": "ya",
    },
    "german": {
        **_RU_COMMON,
        "в": "w",
        "е": "e",
        "ё": "jo",
        "ж": "sch",
        "з": "s",
        "й": "j",
        "с": "s",
        "х": "ch",
        "ц": "z",
        "ч": "tsch",
        "ш": "sch",
        "щ": "schtsch",
        "ы": "y",
        "э": "e",
        "ю": "ju",
        "я": "ja",
    },
    "french": {
        **_RU_COMMON,
        "е": "e",
        "ё": "io",
        "ж": "j",
        "й": "i",
        "у": "ou",
        "х": "kh",
        "ц": "ts",
        "ч": "tch",
        "ш": "ch",
        "щ": "chtch",
        "ы": "y",
        "э": "e",
        "ю": "iou",
        "я": "ia",
    },
}


def ru_latin(cyrillic: str, system: str) -> str:
    """`cyrillic` in one romanisation system, upper case."""
    table = RU_SYSTEMS[system]
    return "".join(table.get(c, c) for c in cyrillic.lower()).upper()


# ---- Arabic: script and customary Latin spellings ----------------------------------------------------------
AR_GIVEN: Final = (
    ("محمد", ("MOHAMMED", "MUHAMMAD", "MOHAMED", "MOHAMMAD", "MUHAMMED")),
    ("أحمد", ("AHMED", "AHMAD")),
    ("محمود", ("MAHMOUD", "MAHMUD", "MAHMOOD")),
    ("حسين", ("HUSSEIN", "HUSAYN", "HOSSEIN", "HUSEIN")),
    ("حسن", ("HASSAN", "HASAN")),
    ("علي", ("ALI",)),
    ("عمر", ("OMAR", "UMAR")),
    ("يوسف", ("YOUSSEF", "YUSUF", "YOUSEF", "YOUSSOUF")),
    ("إبراهيم", ("IBRAHIM", "EBRAHIM", "IBRAHEEM")),
    ("خالد", ("KHALID", "KHALED")),
    ("عبدالله", ("ABDULLAH", "ABDALLAH", "ABDULLA")),
    ("عبدالرحمن", ("ABDULRAHMAN", "ABDELRAHMAN", "ABDURRAHMAN")),
    ("سعيد", ("SAEED", "SAID", "SAYEED")),
    ("مصطفى", ("MUSTAFA", "MOSTAFA", "MUSTAPHA")),
    ("كريم", ("KARIM", "KAREEM")),
    ("طارق", ("TARIQ", "TAREK", "TARIK")),
    ("جمال", ("JAMAL", "DJAMEL", "JAMEL")),
    ("فاطمة", ("FATIMA", "FATMA", "FATIMAH")),
    ("عائشة", ("AISHA", "AICHA", "AYESHA")),
    ("خديجة", ("KHADIJA", "KHADIDJA", "KHADIJAH")),
    ("مريم", ("MARIAM", "MARYAM", "MERYEM")),
    ("زينب", ("ZAINAB", "ZEINAB", "ZAYNAB")),
    ("نور", ("NOUR", "NUR", "NOOR")),
    ("ليلى", ("LAYLA", "LEILA", "LAILA")),
    ("سلمى", ("SALMA", "SELMA")),
    ("هالة", ("HALA",)),
    ("رشيد", ("RASHID", "RACHID", "RASHEED")),
    ("ناصر", ("NASSER", "NASER", "NASIR")),
    ("منصور", ("MANSOUR", "MANSUR", "MANSOOR")),
    ("صالح", ("SALEH", "SALIH")),
    ("عثمان", ("OTHMAN", "OSMAN", "UTHMAN")),
    ("سليمان", ("SULEIMAN", "SULAYMAN", "SOLIMAN")),
    ("فاروق", ("FAROUK", "FARUQ", "FAROOQ")),
    ("جابر", ("JABER", "JABIR")),
    ("وليد", ("WALID", "WALEED")),
    ("ياسين", ("YASSINE", "YASIN", "YASEEN")),
    ("إسماعيل", ("ISMAIL", "ISMAEL")),
    ("حمزة", ("HAMZA", "HAMZAH")),
    ("بلال", ("BILAL",)),
    ("أنس", ("ANAS",)),
    ("زكريا", ("ZAKARIA", "ZAKARIYA", "ZAKARIYYA")),
    ("عادل", ("ADEL", "ADIL")),
    ("سمير", ("SAMIR", "SAMEER")),
    ("نبيل", ("NABIL", "NABEEL")),
    ("هشام", ("HISHAM", "HICHAM")),
    ("أمينة", ("AMINA", "AMINAH")),
    ("سارة", ("SARA", "SARAH")),
    ("رانيا", ("RANIA", "RANYA")),
    ("دعاء", ("DOAA", "DUAA")),
)
AR_NISBA: Final = (
    ("المصري", ("MASRI", "MASRY")),
    ("الحداد", ("HADDAD", "HADAD")),
    ("الخوري", ("KHOURY", "KHOURI")),
    ("الرشيد", ("RASHID", "RASHEED")),
    ("الزهراني", ("ZAHRANI",)),
    ("القرشي", ("QURASHI", "KURASHI", "QURESHI")),
    ("الشريف", ("SHARIF", "SHERIF", "CHERIF")),
    ("العزيز", ("AZIZ",)),
    ("الحمد", ("HAMAD", "HAMED")),
    ("التميمي", ("TAMIMI", "TAMEEMI")),
    ("الدوسري", ("DOSARI", "DOSSARY")),
    ("العتيبي", ("OTAIBI", "UTAYBI")),
    ("الشمري", ("SHAMMARI", "SHAMARI")),
    ("الحربي", ("HARBI",)),
    ("الغامدي", ("GHAMDI",)),
    ("المالكي", ("MALIKI", "MALKI")),
    ("البغدادي", ("BAGHDADI",)),
    ("الحلبي", ("HALABI",)),
    ("الدمشقي", ("DIMASHQI", "DIMASHKI")),
    ("النجار", ("NAJJAR", "NAJAR", "NAGGAR")),
    ("السيد", ("SAYED", "SAYYID", "SAYYED")),
    ("الخطيب", ("KHATIB", "KHATEEB")),
    ("العلي", ("ALI",)),
    ("الحسيني", ("HUSSEINI", "HUSAYNI", "HOSSEINI")),
    ("الجبوري", ("JUBOURI", "JBOURI")),
    ("الكردي", ("KURDI",)),
    ("الأنصاري", ("ANSARI",)),
    ("الهاشمي", ("HASHEMI", "HASHIMI")),
    ("الفاسي", ("FASSI", "FASI")),
    ("الطرابلسي", ("TRABELSI", "TARABULSI")),
    ("الشامي", ("SHAMI", "CHAMI")),
    ("العمري", ("OMARI", "AMRI", "UMARI")),
)
_AR_ARTICLE_SPELLINGS: Final = ("AL-", "AL ", "EL-", "EL ", "AL")

# ---- Chinese: characters, pinyin and Wade-Giles --------------------------------------------------------------
ZH_FAMILY: Final = (
    ("王", "WANG", "WANG"),
    ("李", "LI", "LI"),
    ("张", "ZHANG", "CHANG"),
    ("刘", "LIU", "LIU"),
    ("陈", "CHEN", "CH'EN"),
    ("杨", "YANG", "YANG"),
    ("黄", "HUANG", "HUANG"),
    ("赵", "ZHAO", "CHAO"),
    ("吴", "WU", "WU"),
    ("周", "ZHOU", "CHOU"),
    ("徐", "XU", "HSU"),
    ("孙", "SUN", "SUN"),
    ("马", "MA", "MA"),
    ("朱", "ZHU", "CHU"),
    ("胡", "HU", "HU"),
    ("郭", "GUO", "KUO"),
    ("何", "HE", "HO"),
    ("高", "GAO", "KAO"),
    ("林", "LIN", "LIN"),
    ("罗", "LUO", "LO"),
    ("郑", "ZHENG", "CHENG"),
    ("梁", "LIANG", "LIANG"),
    ("谢", "XIE", "HSIEH"),
    ("宋", "SONG", "SUNG"),
    ("唐", "TANG", "T'ANG"),
    ("韩", "HAN", "HAN"),
    ("冯", "FENG", "FENG"),
    ("邓", "DENG", "TENG"),
    ("曹", "CAO", "TS'AO"),
    ("彭", "PENG", "P'ENG"),
    ("曾", "ZENG", "TSENG"),
    ("萧", "XIAO", "HSIAO"),
    ("田", "TIAN", "T'IEN"),
    ("董", "DONG", "TUNG"),
    ("潘", "PAN", "P'AN"),
    ("袁", "YUAN", "YUAN"),
    ("蔡", "CAI", "TS'AI"),
    ("蒋", "JIANG", "CHIANG"),
    ("余", "YU", "YU"),
    ("杜", "DU", "TU"),
)
ZH_GIVEN: Final = (
    ("伟", "WEI", "WEI"),
    ("芳", "FANG", "FANG"),
    ("娜", "NA", "NA"),
    ("敏", "MIN", "MIN"),
    ("静", "JING", "CHING"),
    ("丽", "LI", "LI"),
    ("强", "QIANG", "CH'IANG"),
    ("磊", "LEI", "LEI"),
    ("军", "JUN", "CHUN"),
    ("洋", "YANG", "YANG"),
    ("勇", "YONG", "YUNG"),
    ("艳", "YAN", "YEN"),
    ("杰", "JIE", "CHIEH"),
    ("涛", "TAO", "T'AO"),
    ("明", "MING", "MING"),
    ("超", "CHAO", "CH'AO"),
    ("秀", "XIU", "HSIU"),
    ("霞", "XIA", "HSIA"),
    ("平", "PING", "P'ING"),
    ("刚", "GANG", "KANG"),
    ("英", "YING", "YING"),
    ("华", "HUA", "HUA"),
    ("小", "XIAO", "HSIAO"),
    ("建", "JIAN", "CHIEN"),
    ("国", "GUO", "KUO"),
    ("文", "WEN", "WEN"),
    ("红", "HONG", "HUNG"),
    ("玉", "YU", "YU"),
    ("海", "HAI", "HAI"),
    ("龙", "LONG", "LUNG"),
    ("志", "ZHI", "CHIH"),
    ("宇", "YU", "YU"),
    ("晨", "CHEN", "CH'EN"),
    ("欣", "XIN", "HSIN"),
    ("婷", "TING", "T'ING"),
    ("雪", "XUE", "HSUEH"),
    ("梅", "MEI", "MEI"),
    ("东", "DONG", "TUNG"),
    ("春", "CHUN", "CH'UN"),
    ("辉", "HUI", "HUI"),
    ("鹏", "PENG", "P'ENG"),
    ("飞", "FEI", "FEI"),
    ("斌", "BIN", "PIN"),
    ("宁", "NING", "NING"),
    ("凯", "KAI", "K'AI"),
    ("浩", "HAO", "HAO"),
    ("俊", "JUN", "CHUN"),
    ("佳", "JIA", "CHIA"),
)

# ---- Latin-script cultures -------------------------------------------------------------------------------------
ES_GIVEN: Final = (
    "José",
    "Luis",
    "María",
    "Carmen",
    "Juan",
    "Antonio",
    "Francisco",
    "Manuel",
    "Ana",
    "Laura",
    "Isabel",
    "Pedro",
    "Javier",
    "Miguel",
    "Carlos",
    "Rosa",
    "Pilar",
    "Dolores",
    "Jesús",
    "Ángel",
    "Rafael",
    "Fernando",
    "Lucía",
    "Marta",
    "Elena",
    "Raquel",
    "Sergio",
    "Pablo",
    "Jorge",
    "Alberto",
    "Cristina",
    "Beatriz",
    "Ignacio",
    "Ramón",
    "Andrés",
    "Santiago",
    "Alejandro",
    "Diego",
    "Álvaro",
)
ES_FAMILY: Final = (
    "García",
    "Martínez",
    "López",
    "Sánchez",
    "Pérez",
    "Gómez",
    "Martín",
    "Jiménez",
    "Ruiz",
    "Hernández",
    "Díaz",
    "Moreno",
    "Álvarez",
    "Muñoz",
    "Romero",
    "Alonso",
    "Gutiérrez",
    "Navarro",
    "Torres",
    "Domínguez",
    "Vázquez",
    "Ramos",
    "Gil",
    "Ramírez",
    "Serrano",
    "Blanco",
    "Molina",
    "Morales",
    "Suárez",
    "Ortega",
    "Delgado",
    "Castro",
    "Ortiz",
    "Rubio",
    "Marín",
    "Sanz",
    "Núñez",
    "Iglesias",
    "Medina",
    "Garrido",
    "Cortés",
    "Castillo",
    "Santos",
    "Lozano",
    "Guerrero",
    "Cano",
    "Prieto",
    "Méndez",
    "Cruz",
    "Calvo",
    "Gallego",
    "Vidal",
    "León",
    "Márquez",
    "Herrera",
    "Peña",
    "Flores",
    "Cabrera",
    "Campos",
    "Vega",
    "Fuentes",
    "Carrasco",
    "Diez",
    "Caballero",
    "Reyes",
    "Nieto",
    "Aguilar",
    "Pascual",
    "Santana",
    "Herrero",
    "Lorenzo",
    "Montero",
    "Hidalgo",
    "Giménez",
    "Ibáñez",
    "Ferrer",
    "Durán",
    "Santiago",
    "Benítez",
    "Mora",
    "Vicente",
    "Vargas",
    "Arias",
    "Carmona",
    "Crespo",
    "Román",
    "Pastor",
    "Soto",
    "Sáez",
    "Velasco",
    "Moya",
    "Soler",
    "Parra",
    "Esteban",
    "Bravo",
    "Gallardo",
    "Rojas",
    "de la Fuente",
    "del Río",
    "de la Cruz",
    "de la Torre",
    "del Valle",
    "de los Santos",
)
DE_GIVEN: Final = (
    "Hans",
    "Peter",
    "Jürgen",
    "Klaus",
    "Stefan",
    "Anna",
    "Grete",
    "Wolfgang",
    "Michael",
    "Thomas",
    "Andreas",
    "Frank",
    "Uwe",
    "Jörg",
    "Sabine",
    "Ursula",
    "Monika",
    "Petra",
    "Birgit",
    "Günter",
    "Dieter",
    "Horst",
    "Karl",
    "Heinz",
    "Manfred",
    "Lukas",
    "Jan",
    "Pieter",
    "Sanne",
    "Maarten",
    "Sophie",
    "Lena",
    "Maximilian",
    "Felix",
    "Jonas",
    "Katharina",
    "Björn",
    "Dirk",
    "Sören",
)
DE_FAMILY: Final = (
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Schäfer",
    "Koch",
    "Bauer",
    "Richter",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Krüger",
    "Hofmann",
    "Hartmann",
    "Lange",
    "Schmitt",
    "Werner",
    "Krause",
    "Meier",
    "Lehmann",
    "Köhler",
    "Maier",
    "Scholz",
    "Möller",
    "Weiß",
    "Jung",
    "Hahn",
    "von Berg",
    "von der Heide",
    "van der Berg",
    "van Dijk",
    "de Vries",
    "de Jong",
    "Janssen",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "van den Berg",
    "van Leeuwen",
    "von Stein",
    "Oßwald",
)
_DE_ROOTS: Final = (
    "Schwarz",
    "Weiß",
    "Rot",
    "Grün",
    "Klein",
    "Groß",
    "Hoch",
    "Neu",
    "Alt",
    "Berg",
    "Stein",
    "Holz",
    "Eich",
    "Linde",
    "Rosen",
    "Blum",
    "Kirch",
    "Mühl",
    "Bach",
    "Feld",
    "Hage",
    "Lieb",
    "Kauf",
    "Acker",
    "Brunn",
    "Frei",
    "Gold",
    "Hirsch",
    "Kuhn",
    "Licht",
    "Mohr",
    "Sonn",
    "Wasser",
    "Wies",
)
_DE_SUFFIXES: Final = (
    "mann",
    "er",
    "berg",
    "bach",
    "feld",
    "hoff",
    "stein",
    "wald",
    "hausen",
    "dorf",
    "meier",
    "brunner",
    "huber",
    "ig",
    "inger",
    "ecker",
)
FR_GIVEN: Final = (
    "Jean",
    "Pierre",
    "Michel",
    "Jean-Pierre",
    "Marie-Claire",
    "Philippe",
    "Alain",
    "Nathalie",
    "Isabelle",
    "Sylvie",
    "Catherine",
    "François",
    "Hélène",
    "Élodie",
    "Jérôme",
    "Stéphane",
    "Sébastien",
    "Anne-Sophie",
    "Jean-Luc",
    "Marie",
    "Camille",
    "Amélie",
    "Benoît",
    "Thierry",
    "Gaëlle",
    "Loïc",
)
FR_FAMILY: Final = (
    "Dupont",
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefebvre",
    "Michel",
    "David",
    "Bertrand",
    "Roux",
    "Vincent",
    "Fournier",
    "Morel",
    "Girard",
    "André",
    "Lefèvre",
    "Mercier",
    "Dupuis",
    "Lambert",
    "Bonnet",
    "François",
    "Martinez",
    "Legrand",
    "Garnier",
    "Faure",
    "Rousseau",
    "Blanc",
    "Guérin",
    "Muller",
    "Henry",
    "Roussel",
    "Nicolas",
    "Perrin",
    "Morin",
    "Mathieu",
    "Clément",
    "Gauthier",
    "Dumont",
    "Lopez",
    "Fontaine",
    "Chevalier",
    "Robin",
    "de Villiers",
    "du Pont",
    "Le Gall",
    "de la Roche",
    "Saint-Martin",
    "Le Goff",
    "d'Alembert",
)
EN_GIVEN: Final = (
    "John",
    "James",
    "Robert",
    "Michael",
    "William",
    "David",
    "Richard",
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Sarah",
    "Emily",
    "Thomas",
    "Charles",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Paul",
    "Steven",
    "Andrew",
    "Joshua",
    "Kevin",
    "Brian",
    "George",
    "Edward",
    "Rebecca",
    "Laura",
    "Helen",
    "Susan",
    "Margaret",
    "Siobhan",
    "Aoife",
    "Seamus",
    "Niamh",
)
EN_FAMILY: Final = (
    "Smith",
    "Jones",
    "Williams",
    "Brown",
    "Taylor",
    "Davies",
    "Wilson",
    "Evans",
    "Thomas",
    "Johnson",
    "Roberts",
    "Walker",
    "Wright",
    "Robinson",
    "Thompson",
    "White",
    "Hughes",
    "Edwards",
    "Green",
    "Hall",
    "Wood",
    "Harris",
    "Lewis",
    "Martin",
    "Jackson",
    "Clarke",
    "Clark",
    "Turner",
    "Hill",
    "Scott",
    "Cooper",
    "Morris",
    "Ward",
    "Moore",
    "King",
    "Watson",
    "Baker",
    "Harrison",
    "Morgan",
    "Patel",
    "Young",
    "Allen",
    "Mitchell",
    "James",
    "Anderson",
    "Phillips",
    "Lee",
    "Bell",
    "Parker",
    "O'Brien",
    "O'Connor",
    "McDonald",
    "MacLeod",
    "McCarthy",
    "O'Neill",
    "Fitzgerald",
    "Murphy",
)
_EN_ROOTS: Final = (
    "Ash",
    "Brad",
    "Crom",
    "Har",
    "Wood",
    "Whit",
    "Black",
    "Fair",
    "Green",
    "Holl",
    "King",
    "Lang",
    "Mill",
    "North",
    "Rad",
    "Stan",
    "West",
    "East",
    "Brook",
    "Chad",
    "Den",
    "Elm",
    "Fern",
    "Glad",
    "Hat",
    "Kens",
    "Lock",
    "Mar",
    "Nor",
    "Pem",
    "Rock",
    "Sher",
    "Thorn",
    "Wal",
)
_EN_SUFFIXES: Final = (
    "ford",
    "ley",
    "ton",
    "well",
    "wood",
    "field",
    "by",
    "ham",
    "worth",
    "dale",
    "brook",
    "ridge",
    "more",
    "stone",
    "shaw",
    "wick",
)
TR_GIVEN: Final = (
    "Mehmet",
    "Mustafa",
    "Ahmet",
    "Ali",
    "Hüseyin",
    "Hasan",
    "İbrahim",
    "İsmail",
    "Osman",
    "Yusuf",
    "Murat",
    "Ömer",
    "Ramazan",
    "Halil",
    "Süleyman",
    "Ayşe",
    "Fatma",
    "Emine",
    "Hatice",
    "Zeynep",
    "Elif",
    "Meryem",
    "Şerife",
    "Zehra",
    "Özlem",
    "Gülşen",
    "Çağla",
    "Barış",
    "Doğan",
    "Tuğba",
)
TR_FAMILY: Final = (
    "Yılmaz",
    "Kaya",
    "Demir",
    "Şahin",
    "Çelik",
    "Yıldız",
    "Yıldırım",
    "Öztürk",
    "Aydın",
    "Özdemir",
    "Arslan",
    "Doğan",
    "Kılıç",
    "Aslan",
    "Çetin",
    "Kara",
    "Koç",
    "Kurt",
    "Özkan",
    "Şimşek",
    "Polat",
    "Özcan",
    "Korkmaz",
    "Çakır",
    "Erdoğan",
    "Yavuz",
    "Can",
    "Acar",
    "Şen",
    "Aktaş",
    "Güler",
    "Yalçın",
    "Güneş",
    "Bozkurt",
    "Bulut",
    "Keskin",
    "Ünal",
    "Turan",
    "Gül",
    "Özer",
    "Işık",
    "Kaplan",
    "Avcı",
    "Sarı",
    "Tekin",
    "Taş",
    "Köse",
    "Yüksel",
    "Ateş",
    "Aksoy",
)

CULTURES: Final = ("ru", "ar", "zh", "es", "de", "fr", "en", "tr")
_CULTURE_WEIGHTS: Final = (14, 16, 14, 14, 12, 10, 12, 8)
_NATIONALITY: Final = {
    "ru": "RUS",
    "ar": "EGY",
    "zh": "CHN",
    "es": "ESP",
    "de": "DEU",
    "fr": "FRA",
    "en": "GBR",
    "tr": "TUR",
}
_COUNTRIES: Final = ("RUS", "EGY", "SAU", "CHN", "ESP", "DEU", "NLD", "FRA", "GBR", "IRL", "TUR", "MAR", "USA")
_DATE_FORMATS: Final[tuple[Callable[[dt.date], str], ...]] = (
    lambda d: d.isoformat(),
    lambda d: d.strftime("%d/%m/%Y"),
    lambda d: d.strftime("%d.%m.%Y"),
    lambda d: d.strftime("%Y%m%d"),
    lambda d: d.strftime("%y%m%d"),
    lambda d: d.strftime("%d%b%y").upper(),
)

POSITIVE_TYPES: Final = (
    "exact",
    "typo",
    "transliteration",
    "particle_dropped",
    "spanish_one_surname",
    "compound",
    "dob_swapped",
    "dob_off_by_one",
    "dob_unreadable",
    "pnr_format",
    "passenger_native_script",
    "entry_original_script",
    "document",
    "document_ocr",
    "entry_year_only",
)
NEGATIVE_TYPES: Final = ("namesake_other_dob", "same_family_and_dob", "same_given_and_dob", "document_other_country")
HOMONYM: Final = "homonym"
"""An ordinary passenger who bears the same name as a listed person (the same name in its own script
whatever romanisation either side uses, or the same spelling) and was born the same day (the same
year, for an entry giving only the year). No screening can tell the two apart from name and date:
an officer must check the passenger, so the set labels them apart from ordinary passengers, and the
bench reports how many raise a hit on their namesake without counting those hits as true or false
alarms (hits on other entries count as false alarms)."""


@dataclass
class Person:
    """One generated person, in every form the set needs."""

    culture: str
    family_latin: str  # as a Latin-script list would hold it
    given_latin: str
    family_native: str = ""  # Cyrillic, Arabic or Han; "" for Latin-script cultures
    given_native: str = ""
    family_variant: str = ""  # another customary romanisation ("" when there is none)
    given_variant: str = ""
    dob: dt.date = dt.date(1970, 1, 1)
    year_only: bool = False
    document: str = ""
    country: str = ""
    nationality: str = ""
    particle: str = ""  # the family name without its particle, when it has one
    second_surname: bool = False
    joined_family: str = ""  # compounds written together or apart
    joined_given: str = ""
    original_script_only: bool = False
    nationality_listed: bool = True
    entry_id: str = ""
    tags: set[str] = field(default_factory=set)


def _zipf(rng: random.Random, items: Sequence[object], skew: float = 0.9) -> int:
    weights = _zipf_weights(len(items), skew)
    return rng.choices(range(len(items)), cum_weights=weights)[0]


_WEIGHT_CACHE: dict[tuple[int, float], list[float]] = {}


def _zipf_weights(n: int, skew: float) -> list[float]:
    key = (n, skew)
    if key not in _WEIGHT_CACHE:
        total, out = 0.0, []
        for i in range(n):
            total += 1.0 / (i + 1) ** skew
            out.append(total)
        _WEIGHT_CACHE[key] = out
    return _WEIGHT_CACHE[key]


def _pick(rng: random.Random, items: Sequence[str]) -> str:
    return items[_zipf(rng, items)]


def _dob(rng: random.Random) -> dt.date:
    return dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(365 * 66))


def _document(rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPRTUVWXYZ"
    return rng.choice(letters) + rng.choice(letters) + "".join(rng.choice("0123456789") for _ in range(7))


def _ru(rng: random.Random) -> Person:
    female = rng.random() < 0.45
    given = _pick(rng, RU_GIVEN_F if female else RU_GIVEN_M)
    root = _pick(rng, RU_FAMILY_ROOTS)
    family = root if root.endswith(("ов", "ев", "ин", "ёв")) else root + rng.choice(_RU_SUFFIX)
    if female:
        family = family[:-3] + "ская" if family.endswith("ский") else family + "а"
    father = _pick(rng, RU_GIVEN_M)
    stem = father[:-1] if father.endswith("й") else father
    patronymic = (
        stem + ("евна" if father.endswith("й") else "овна")
        if female
        else stem + ("евич" if father.endswith("й") else "ович")
    )
    system, other = rng.sample(["icao", "bgn", "german", "french"], 2)
    person = Person(
        "ru",
        ru_latin(family, system),
        ru_latin(given, system),
        family,
        given,
        ru_latin(family, other),
        ru_latin(given, other),
    )
    if rng.random() < 0.4:  # lists often give the patronymic
        person.given_latin += " " + ru_latin(patronymic, system)
        person.given_native += " " + patronymic
    return person


def _two(rng: random.Random, spellings: Sequence[str]) -> tuple[str, str]:
    """Two different spellings, or the only one twice."""
    if len(spellings) > 1:
        a, b = rng.sample(list(spellings), 2)
        return a, b
    return spellings[0], spellings[0]


def _ar(rng: random.Random) -> Person:
    given_native, given_spellings = AR_GIVEN[_zipf(rng, AR_GIVEN)]
    if rng.random() < 0.55:
        family_native, family_spellings = AR_NISBA[_zipf(rng, AR_NISBA)]
        article = rng.choice(_AR_ARTICLE_SPELLINGS)
        a, b = _two(rng, family_spellings)
        other_article = rng.choice([x for x in _AR_ARTICLE_SPELLINGS if x != article])
        person = Person("ar", f"{article}{a}", "", family_native, given_native, f"{other_article}{b}", "")
        person.particle = a
        person.joined_family = f"{article.strip('- ')}{a}" if article.endswith(("-", " ")) else f"AL {a[0:]}"
    else:
        family_native, father_spellings = AR_GIVEN[_zipf(rng, AR_GIVEN)]  # the father's name as family name
        a, b = _two(rng, father_spellings)
        person = Person("ar", a, "", family_native, given_native, b, "")
    g1, g2 = _two(rng, given_spellings)
    person.given_latin, person.given_variant = g1, g2
    return person


def _zh(rng: random.Random) -> Person:
    han_f, pinyin_f, wg_f = ZH_FAMILY[_zipf(rng, ZH_FAMILY)]
    chars = [ZH_GIVEN[_zipf(rng, ZH_GIVEN, 0.6)] for _ in range(1 if rng.random() < 0.3 else 2)]
    given_han = "".join(c[0] for c in chars)
    pinyin_g = "".join(c[1] for c in chars)
    wg_g = "-".join(c[2] for c in chars).title().upper() if len(chars) > 1 else chars[0][2]
    person = Person("zh", pinyin_f, pinyin_g, han_f, given_han, wg_f.replace("'", ""), wg_g.replace("'", ""))
    if len(chars) > 1:
        person.joined_given = " ".join(c[1] for c in chars)  # XIAOMING written apart
    return person


def _latin(rng: random.Random, culture: str) -> Person:
    if culture == "es":
        given = _pick(rng, ES_GIVEN) + (" " + _pick(rng, ES_GIVEN) if rng.random() < 0.3 else "")
        first, second = _pick(rng, ES_FAMILY), _pick(rng, ES_FAMILY)
        person = Person("es", f"{first} {second}", given, second_surname=True)
        person.particle = first
        person.joined_family = f"{first}{second}".replace(" ", "")
        return person
    given_list, family_list, roots, suffixes = {
        "de": (DE_GIVEN, DE_FAMILY, _DE_ROOTS, _DE_SUFFIXES),
        "fr": (FR_GIVEN, FR_FAMILY, (), ()),
        "en": (EN_GIVEN, EN_FAMILY, _EN_ROOTS, _EN_SUFFIXES),
        "tr": (TR_GIVEN, TR_FAMILY, (), ()),
    }[culture]
    family = rng.choice(roots) + rng.choice(suffixes) if roots and rng.random() < 0.5 else _pick(rng, family_list)
    given = _pick(rng, given_list)
    if culture in {"de", "en"} and rng.random() < 0.25:
        given += " " + _pick(rng, given_list)
    person = Person(culture, family, given)
    words = family.split()
    if len(words) > 1 and words[0].lower() in {"von", "van", "de", "du", "le", "del"}:
        person.particle = " ".join(
            w for w in words if w.lower() not in {"von", "van", "der", "den", "de", "la", "du", "del", "los"}
        )
        person.joined_family = "".join(words)
    if "-" in given:
        person.joined_given = given.replace("-", "")
    return person


def make_person(rng: random.Random) -> Person:
    """A random person of a random culture (dates of birth, documents and nationality included)."""
    culture = rng.choices(CULTURES, weights=_CULTURE_WEIGHTS)[0]
    if culture == "ru":
        person = _ru(rng)
    elif culture == "ar":
        person = _ar(rng)
    elif culture == "zh":
        person = _zh(rng)
    else:
        person = _latin(rng, culture)
    person.dob = _dob(rng)
    person.nationality = _NATIONALITY[culture] if rng.random() < 0.85 else rng.choice(_COUNTRIES)
    person.country = person.nationality
    person.document = _document(rng)
    person.nationality_listed = rng.random() < 0.8
    return person


def entry_of(person: Person) -> payload_pb2.WatchlistEntry:
    """The watchlist entry that lists `person`."""
    entry = payload_pb2.WatchlistEntry(
        entry_id=person.entry_id,
        entity_type=payload_pb2.ENTITY_PERSON,
        nationalities=[person.nationality] if person.nationality_listed else [],
        document_number=person.document,
        issuing_country=person.country,
        action_on_hit=payload_pb2.DISCREET_CHECK_AND_REPORT,
    )
    if person.original_script_only:
        entry.family_name, entry.given_names = person.family_native, person.given_native
    else:
        entry.family_name, entry.given_names = person.family_latin, person.given_latin
    d = person.dob
    entry.date_of_birth.CopyFrom(
        payload_pb2.Date(year=d.year) if person.year_only else payload_pb2.Date(year=d.year, month=d.month, day=d.day)
    )
    return entry


@dataclass(frozen=True)
class Labelled:
    """A manifest record with what it is: a variation of `target` (positive), a hard negative, an
    ordinary passenger, or a homonym (an ordinary passenger who bears the name of listed people and
    was born the same day: `namesakes` are their entry ids)."""

    record: ScreeningRecord
    variation: str  # a POSITIVE_TYPES or NEGATIVE_TYPES name, "ordinary" or HOMONYM
    target: str = ""  # the entry id it should hit ("" for negatives, ordinary passengers and homonyms)
    namesakes: tuple[str, ...] = ()


def _dob_text(rng: random.Random, date: dt.date) -> str:
    return rng.choice(_DATE_FORMATS)(date)


def _typo(rng: random.Random, word: str) -> str:
    letters = "ABCDEFGHIJKLMNOPRSTUVWYZ"
    positions = [i for i, c in enumerate(word) if c.isalpha()]
    i = rng.choice(positions[1:] or positions)
    kind = rng.randrange(4)
    if kind == 0:
        return word[:i] + rng.choice([c for c in letters if c != word[i].upper()]) + word[i + 1 :]
    if kind == 1:
        return word[:i] + rng.choice(letters) + word[i:]
    if kind == 2 and len(word) > 4:
        return word[:i] + word[i + 1 :]
    if i + 1 < len(word) and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + rng.choice([c for c in letters if c != word[i].upper()]) + word[i + 1 :]


def _passport_given(person: Person) -> str:
    """Given names as a passport prints them (no patronymic)."""
    if person.culture == "ru":
        return person.given_latin.split()[0]
    return person.given_latin


def _positive(rng: random.Random, kind: str, person: Person, other: Person) -> ScreeningRecord | None:
    dob = _dob_text(rng, person.dob)
    base = ScreeningRecord(
        family_name=person.family_latin,
        given_names=_passport_given(person),
        date_of_birth=dob,
        nationality=person.nationality if rng.random() < 0.7 else "",
        document_number=other.document,
        document_country=other.country,
    )
    if kind == "exact":
        return base
    if kind == "typo":
        if rng.random() < 0.5 and len(person.family_latin) >= 4:
            return replace(base, family_name=_typo(rng, person.family_latin.upper()))
        given = _passport_given(person)
        return replace(base, given_names=_typo(rng, given.upper())) if len(given) >= 4 else None
    if kind == "transliteration":
        if person.culture not in {"ru", "ar", "zh"} or not person.family_variant:
            return None
        given = person.given_variant or _passport_given(person)
        if (person.family_variant, given) == (person.family_latin, _passport_given(person)):
            return None
        return replace(base, family_name=person.family_variant, given_names=given)
    if kind == "particle_dropped":
        if not person.particle or person.culture == "es":
            return None
        return replace(base, family_name=person.particle)
    if kind == "spanish_one_surname":
        if not person.second_surname:
            return None
        return replace(base, family_name=person.particle)
    if kind == "compound":
        if person.joined_family:
            return replace(base, family_name=person.joined_family)
        if person.joined_given:
            return replace(base, given_names=person.joined_given)
        return None
    if kind == "dob_swapped":
        d = person.dob
        if d.day > 12 or d.day == d.month:
            return None
        return replace(base, date_of_birth=_dob_text(rng, dt.date(d.year, d.day, d.month)))
    if kind == "dob_off_by_one":
        d = person.dob
        shifted = d + dt.timedelta(days=rng.choice((-1, 1))) if rng.random() < 0.5 else _year_shift(d, rng)
        return replace(base, date_of_birth=_dob_text(rng, shifted))
    if kind == "dob_unreadable":
        return replace(base, date_of_birth=rng.choice(("00/00/0000", "unknown", "XX.XX.19XX", "1975-13-45", "?")))
    if kind == "pnr_format":
        family = person.family_latin.upper().replace(" ", "").replace("-", "").replace("'", "")
        given = _passport_given(person).upper().replace(" ", "").replace("-", "")
        title = rng.choice(("MR", "MRS", "MS", "DR", ""))
        name = f"{family}/{given}{' ' + title if title else ''}"
        return replace(base, family_name="", given_names="", name=_strip_accents(name)[:30])
    if kind == "passenger_native_script":
        if not person.family_native:
            return None
        given = person.given_native.split()[0] if person.culture == "ru" else person.given_native
        return replace(base, family_name=person.family_native, given_names=given)
    if kind in {"document", "document_ocr"}:
        number = person.document if kind == "document" else _ocr(rng, person.document)
        if number is None:
            return None
        return ScreeningRecord(
            family_name=other.family_latin,
            given_names=other.given_latin,
            date_of_birth=_dob_text(rng, other.dob),
            nationality=other.nationality,
            document_number=number,
            document_country=person.country,
        )
    if kind in {"entry_original_script", "entry_year_only"}:
        return base  # the entry itself is the variation (see make_set)
    raise ValueError(kind)


def _strip_accents(text: str) -> str:
    table = str.maketrans(
        {
            "Ü": "UE",
            "Ö": "OE",
            "Ä": "AE",
            "ß": "SS",
            "Ø": "OE",
            "Ł": "L",
            "İ": "I",
            "ı": "I",
            "Ş": "S",
            "Ğ": "G",
            "Ç": "C",
        }
    )
    decomposed = unicodedata.normalize("NFKD", text.upper().translate(table))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _year_shift(d: dt.date, rng: random.Random) -> dt.date:
    try:
        return d.replace(year=d.year + rng.choice((-1, 1)))
    except ValueError:  # 29 February
        return d + dt.timedelta(days=1)


def _ocr(rng: random.Random, number: str) -> str | None:
    swaps = {"0": "O", "O": "0", "1": "I", "I": "1", "5": "S", "S": "5", "8": "B", "B": "8"}
    positions = [i for i, c in enumerate(number) if c in swaps]
    if not positions:
        return None
    i = rng.choice(positions)
    return number[:i] + swaps[number[i]] + number[i + 1 :]


def _negative(rng: random.Random, kind: str, person: Person, stranger: Person) -> ScreeningRecord | None:
    if kind == "namesake_other_dob":
        far = person.dob + dt.timedelta(days=rng.choice((-1, 1)) * rng.randrange(800, 9000))
        return ScreeningRecord(
            family_name=person.family_latin,
            given_names=_passport_given(person),
            date_of_birth=_dob_text(rng, far),
            nationality=person.nationality,
            document_number=stranger.document,
            document_country=stranger.country,
        )
    if kind == "same_family_and_dob":
        if stranger.culture != person.culture or _passport_given(stranger) == _passport_given(person):
            return None
        return ScreeningRecord(
            family_name=person.family_latin,
            given_names=_passport_given(stranger),
            date_of_birth=_dob_text(rng, person.dob),
            nationality=person.nationality,
            document_number=stranger.document,
            document_country=stranger.country,
        )
    if kind == "same_given_and_dob":
        if stranger.culture != person.culture or stranger.family_latin == person.family_latin:
            return None
        return ScreeningRecord(
            family_name=stranger.family_latin,
            given_names=_passport_given(person),
            date_of_birth=_dob_text(rng, person.dob),
            nationality=person.nationality,
            document_number=stranger.document,
            document_country=stranger.country,
        )
    if kind == "document_other_country":
        country = rng.choice([c for c in _COUNTRIES if c != person.country])
        return ScreeningRecord(
            family_name=stranger.family_latin,
            given_names=stranger.given_latin,
            date_of_birth=_dob_text(rng, stranger.dob),
            nationality=stranger.nationality,
            document_number=person.document,
            document_country=country,
        )
    raise ValueError(kind)


@dataclass
class ScreeningSet:
    """A generated list and manifest."""

    entries: list[payload_pb2.WatchlistEntry]
    manifest: list[Labelled]


def _fold(text: str) -> str:
    return "".join(c for c in _strip_accents(text) if c.isalnum())


def _name_keys(person: Person) -> list[tuple[str, ...]]:
    """What makes two generated people namesakes: the same name in its own script (a Cyrillic, Arabic
    or Han name, however romanised), or the same spelling of family and passport given names."""
    keys: list[tuple[str, ...]] = [("latin", _fold(person.family_latin), _fold(_passport_given(person)))]
    if person.family_native:
        given = person.given_native.split()[0] if person.culture == "ru" else person.given_native
        keys.append((person.culture, person.family_native, given))
    return keys


def _homonym_index(people: Sequence[Person]) -> dict[tuple[object, ...], list[str]]:
    index: dict[tuple[object, ...], list[str]] = {}
    for person in people:
        born = (person.dob.year,) if person.year_only else (person.dob.year, person.dob.month, person.dob.day)
        for key in _name_keys(person):
            index.setdefault((*key, *born), []).append(person.entry_id)
    return index


def _namesakes(index: dict[tuple[object, ...], list[str]], person: Person) -> tuple[str, ...]:
    """The listed people who share `person`'s name and date of birth (see HOMONYM)."""
    found: set[str] = set()
    d = person.dob
    for key in _name_keys(person):
        found.update(index.get((*key, d.year, d.month, d.day), ()))
        found.update(index.get((*key, d.year), ()))
    return tuple(sorted(found))


def make_set(entries: int, passengers: int, *, seed: int, per_type: int = 200) -> ScreeningSet:
    """`entries` listed people and `passengers` manifest records, `per_type` of each labelled type."""
    rng = random.Random(seed)
    people = []
    for i in range(entries):
        person = make_person(rng)
        person.entry_id = f"s{seed}-e{i}"
        people.append(person)
    labelled: list[Labelled] = []
    # Entries that are themselves the variation: original script only, or a year of birth only.
    eligible_for: dict[str, Callable[[Person], bool] | None] = {
        "entry_original_script": lambda p: bool(p.family_native),
        "entry_year_only": None,
    }
    for kind, eligible in eligible_for.items():
        chosen = 0
        for person in rng.sample(people, min(len(people), per_type * 20)):
            if chosen == per_type:
                break
            if person.tags or (eligible is not None and not eligible(person)):
                continue
            person.tags.add(kind)
            if kind == "entry_original_script":
                person.original_script_only = True
            else:
                person.year_only = True
            record = _positive(rng, kind, person, make_person(rng))
            assert record is not None
            labelled.append(Labelled(record, kind, person.entry_id))
            chosen += 1
    plain = [p for p in people if not p.tags]
    for kind in POSITIVE_TYPES:
        if kind in {"entry_original_script", "entry_year_only"}:
            continue
        made = 0
        for _ in range(per_type * 50):
            if made == per_type:
                break
            person = rng.choice(plain)
            record = _positive(rng, kind, person, make_person(rng))
            if record is not None:
                labelled.append(Labelled(record, kind, person.entry_id))
                made += 1
    for kind in NEGATIVE_TYPES:
        made = 0
        for _ in range(per_type * 50):
            if made == per_type:
                break
            person = rng.choice(plain)
            stranger = make_person(rng)
            if kind in {"same_family_and_dob", "same_given_and_dob"}:
                for _ in range(30):
                    if stranger.culture == person.culture:
                        break
                    stranger = make_person(rng)
            record = _negative(rng, kind, person, stranger)
            if record is not None:
                labelled.append(Labelled(record, kind))
                made += 1
    manifest: list[Labelled] = []
    homonyms = _homonym_index(people)
    for _ in range(max(0, passengers - len(labelled))):
        p = make_person(rng)
        namesakes = _namesakes(homonyms, p)
        manifest.append(
            Labelled(
                ScreeningRecord(
                    family_name=p.family_latin,
                    given_names=_passport_given(p),
                    date_of_birth=_dob_text(rng, p.dob),
                    nationality=p.nationality if rng.random() < 0.7 else "",
                    document_number=p.document,
                    document_country=p.country,
                ),
                HOMONYM if namesakes else "ordinary",
                namesakes=namesakes,
            )
        )
    manifest.extend(labelled)
    rng.shuffle(manifest)
    manifest = [replace(m, record=replace(m.record, record_id=f"pax{i}")) for i, m in enumerate(manifest)]
    return ScreeningSet([entry_of(p) for p in people], manifest)
