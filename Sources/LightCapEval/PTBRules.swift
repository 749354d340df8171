// The token classes of the PTB tokenizer (CoreNLP 3.4.1, default options plus tokenizeNLs, as
// pycocoevalcap runs it): PTB3 escaping of brackets, LaTeX-style quotes, "--" for dashes,
// "..." for ellipses, currency and fraction normalisation, assimilations split
// (cannot -> can not, gonna -> gon na), no Americanization, untokenizable characters deleted.
// Rules are listed in priority order; a longer match always beats an earlier rule.

import Foundation

private typealias P = Pattern

/// The rule table, built once.
final class PTBRules: Sendable {
    static let shared = PTBRules()
    let rules: [PTBRule]
    /// For each ASCII code unit, the indices of the rules that can start with it.
    let asciiCandidates: [[Int]]

    private init() {
        // MARK: character classes
        let space = P.unit(.any(of: " \t\u{00A0}\u{3000}") | .ranges([0x2000...0x200A]))
        let newline = P.alt(.chars("\r\u{2028}\u{2029}\u{000B}\u{000C}\u{0085}"), .seq(.chars("\r").opt, .chars("\n")))
        let spaceNL = P.alt(space, newline)
        let spaceNLs = spaceNL.plus
        let digitClass = JavaChar.digit | .ranges([0x07C0...0x07C9])
        let digit = P.unit(digitClass)
        let javaLetter = P.unit(JavaChar.letter)
        let letterOrDigit = P.unit(JavaChar.letter | JavaChar.digit)
        let asciiLetter = P.unit(JavaChar.asciiLetter)
        let asciiAlnum = P.unit(JavaChar.asciiAlnum)
        let upperAZ = P.unit(.ranges([65...90]))
        let d09 = P.unit(JavaChar.asciiDigit)
        func not(_ s: String) -> P { .unit(UnitClass.any(of: s).inverted) }

        // Entities kept for legacy SGML text.
        let spLet = P.seq(.chars("&"), .chars("aeiouAEIOU"), .words(["acute", "grave", "uml"]), .chars(";"))
        let extraLetters: [ClosedRange<UInt16>] = [
            0x00AD...0x00AD, 0x0237...0x024F, 0x02C2...0x02C5, 0x02D2...0x02DF, 0x02E5...0x02FF,
            0x0300...0x036F, 0x0370...0x037D, 0x0384...0x0385, 0x03CF...0x03CF, 0x03F6...0x03F6,
            0x03FC...0x03FF, 0x0483...0x0487, 0x04CF...0x04CF, 0x04F6...0x04FF, 0x0510...0x0525,
            0x055A...0x055F, 0x0591...0x05BD, 0x05BF...0x05BF, 0x05C1...0x05C2, 0x05C4...0x05C5,
            0x05C7...0x05C7, 0x0615...0x061A, 0x063B...0x063F, 0x064B...0x065E, 0x0670...0x0670,
            0x06D6...0x06EF, 0x06FA...0x06FF, 0x070F...0x070F, 0x0711...0x0711, 0x0730...0x074F,
            0x0750...0x077F, 0x07A6...0x07B1, 0x07CA...0x07F5, 0x07FA...0x07FA, 0x0900...0x0903,
            0x093C...0x093C, 0x093E...0x094E, 0x0951...0x0955, 0x0962...0x0963, 0x0981...0x0983,
            0x09BC...0x09C4, 0x09C7...0x09C8, 0x09CB...0x09CD, 0x09D7...0x09D7, 0x09E2...0x09E3,
            0x0A01...0x0A03, 0x0A3C...0x0A3C, 0x0A3E...0x0A4F, 0x0A81...0x0A83, 0x0ABC...0x0ACF,
            0x0B82...0x0B82, 0x0BBE...0x0BC2, 0x0BC6...0x0BC8, 0x0BCA...0x0BCD, 0x0C01...0x0C03,
            0x0C3E...0x0C56, 0x0D3E...0x0D44, 0x0D46...0x0D48, 0x0E30...0x0E3A, 0x0E47...0x0E4E,
            0x0EB1...0x0EBC, 0x0EC8...0x0ECD,
        ]
        let letter = P.alt(.unit(JavaChar.letter | .ranges(extraLetters)), spLet)
        let letterDigit = P.alt(letter, digit)
        let word = P.seq(letter, letterDigit.star, P.seq(.chars(".!?"), letter, letterDigit.star).star)

        let apos = P.alt(.chars("'\u{0092}\u{2019}"), .lit("&apos;"))
        let aposEtc = P.alt(apos, .chars("`\u{0091}\u{2018}\u{201B}"))
        let hyphen = P.chars("-_\u{058A}\u{2010}\u{2011}")

        // MARK: SGML, numbers, words
        let nameChars = P.unit(JavaChar.asciiAlnum | .any(of: "_:.-"))
        let name = P.seq(asciiLetter, nameChars.star)
        let sgml = P.seq(.chars("<"), .alt(
            .seq(.chars("!?"), .unit(JavaChar.asciiLetter | .any(of: "-")), not(">\r\n").star),
            .seq(name,
                 P.seq(.chars(" ").plus, .alt(name, .seq(name, P.chars(" ").star, .chars("="), P.chars(" ").star,
                                                           .alt(.seq(.chars("'"), not("'").star, .chars("'")),
                                                                .seq(.chars("\""), not("\"").star, .chars("\"")))))).star,
                 P.chars(" ").star, P.chars("/").opt),
            .seq(.chars("/"), name)), P.chars(" ").star, .chars(">"))
        let spmdash = P.alt(.seq(.chars("&"), .words(["MD", "mdash", "ndash"]), .chars(";")),
                            .chars("\u{0096}\u{0097}\u{2013}\u{2014}\u{2015}"))
        let spamp = P.lit("&amp;")
        let sppunc = P.seq(.chars("&"), .alt(.words(["HT", "TL", "UR", "LR", "QC", "QL", "QR", "odq", "cdq"]),
                                            .seq(.chars("#"), d09.plus)), .chars(";"))
        let sentEnd = P.seq(spaceNL, .alt(spaceNL, .unit(JavaChar.uppercase), sgml))
        let date = P.seq(digit.times(1, 2), .chars("-/"), digit.times(1, 2), .chars("-/"), digit.times(2, 4))
        let num = P.alt(digit.plus, .seq(digit.star, P.seq(.chars(".:,\u{00AD}\u{066B}\u{066C}"), digit.plus).plus))
        let number = P.seq(P.chars("-+").opt, num)
        let subSupNum = P.seq(P.chars("\u{207A}\u{207B}\u{208A}\u{208B}").opt,
                              .alt(P.unit(.any(of: "\u{2070}\u{00B9}\u{00B2}\u{00B3}") | .ranges([0x2074...0x2079])).plus,
                                   P.unit(.ranges([0x2080...0x2089])).plus))
        let fracSlash = P.alt(.seq(P.chars("\\").opt, .chars("/")), .chars("\u{2044}"))
        let frac = P.seq(P.seq(digit.times(1, 4), .chars("- \u{00A0}")).opt, digit.times(1, 4), fracSlash, digit.times(1, 4))
        let frac2 = P.unit(.any(of: "\u{00BC}\u{00BD}\u{00BE}") | .ranges([0x2153...0x215E]))
        let dolSign = P.alt(.seq(upperAZ.star, .chars("$")), .chars("#"))
        let dolSign2 = P.chars("\u{00A2}\u{00A3}\u{00A4}\u{00A5}\u{0080}\u{20A0}\u{20AC}\u{060B}\u{0E3F}\u{20A4}\u{FFE0}\u{FFE1}\u{FFE5}\u{FFE6}")
        let fileExt = P.words(["bat", "bmp", "c", "class", "cgi", "cpp", "dll", "doc", "docx", "exe", "gif", "gz", "h",
                               "htm", "html", "jar", "java", "jpeg", "jpg", "mov", "mp3", "pdf", "php", "pl", "png",
                               "ppt", "ps", "py", "sql", "tar", "txt", "wav", "x", "xml", "zip"])
        let filename = P.seq(letterDigit.plus, P.seq(.chars("."), letterDigit.plus).star, .chars("."), fileExt)
        let dolPrefix = P.seq(.chars("dDoOlL"), aposEtc, letterOrDigit).opt
        let thing = P.seq(dolPrefix, letterOrDigit.plus, P.seq(hyphen, dolPrefix, letterOrDigit.plus).star)
        let thingA = P.seq(upperAZ.plus, P.seq(.alt(.chars("+&"), spamp), upperAZ.plus).plus)
        let lettersHyphen = P.seq(.chars("-"), asciiLetter.plus).times(0, 2)
        let thing3 = P.seq(asciiAlnum.plus, lettersHyphen,
                           P.seq(P.chars("\\").opt, .chars("/"), asciiAlnum.plus, lettersHyphen).times(1, 2))
        let acro = P.alt(.seq(asciiLetter, P.seq(.chars("."), asciiLetter).star),
                         .seq(.words(["Canada", "Sino", "Korean", "EU", "Japan", "non"]), .lit("-U.S")),
                         .seq(.lit("U.S.-"), .words(["U.K", "U.S.S.R"])))
        let acro2 = P.alt(.seq(asciiLetter, P.seq(.chars("."), asciiLetter).plus),
                          .seq(.words(["Canada", "Sino", "Korean", "EU", "Japan", "non"]), .lit("-U.S")),
                          .seq(.lit("U.S.-"), .words(["U.K", "U.S.S.R"])))
        let hthing = P.seq(asciiAlnum, P.unit(JavaChar.asciiAlnum | .any(of: ".,\u{00AD}")).star,
                           P.seq(.chars("-"), .alt(P.unit(JavaChar.asciiAlnum | .any(of: "\u{00AD}")).plus,
                                                    .seq(acro2, .chars(".")))).plus)
        let redaux = P.seq(apos, .alt(.chars("msdMSD"), .lit("re"), .lit("ve"), .lit("ll")))
        let sword = P.seq(P.unit(JavaChar.asciiLetter | .any(of: "\u{00AD}")).star,
                          .unit(.ranges([65...77, 79...90, 97...109, 111...122])), P.chars("\u{00AD}").star)
        let sredaux = P.seq(.lit("n"), aposEtc, .lit("t"))
        let apoword = P.alt(
            .seq(apos, .lit("n"), apos.opt),
            .seq(.chars("lLdDjJ"), apos),
            .seq(.lit("Dunkin"), apos), .seq(.lit("somethin"), apos), .seq(.lit("ol"), apos), .seq(apos, .lit("em")),
            .seq(.unit(.ranges([65...72, 74...88, 90...90, 110...110])), aposEtc, javaLetter.times(2, 2), javaLetter.star),
            .seq(apos, .unit(.ranges([50...57])), .lit("0s")),
            .seq(apos, .lit("til"), P.lit("l").opt),
            .seq(javaLetter, javaLetter.star, .chars("aeiouyAEIOUY"), aposEtc,
                 .unit(.any(of: "aeiou") | .ranges([65...90])), javaLetter.star),
            .seq(apos, .lit("cause")),
            .seq(.lit("cont'd"), P.chars(".").opt),
            .words(["'twas", "nor'easter", "c'mon", "e'er", "s'mores", "ev'ry", "li'l", "nat'l"]),
            .seq(.lit("O"), aposEtc, .lit("o")))
        let apoword2 = P.seq(.lit("y"), apos)

        // MARK: URLs, e-mail, Twitter
        let urlStop = " \t\n\u{000C}\r\"<>|(){}"
        let fullURL = P.seq(.lit("http"), P.lit("s").opt, .lit("://"), not(urlStop).plus, not(urlStop + ".!?,-"))
        // The likely URL (host, then an optional path) as two patterns, one per kind of host,
        // each a rule of its own, adjacent and with the same action, so the tokens are those of
        // one rule.
        let urlPath = P.seq(.chars("/"), not(" \t\n\u{000C}\r\"<>|()").plus, not(urlStop + ".!?,-")).opt
        let wwwURL = P.seq(.lit("www."), P.seq(not(urlStop + ".!?,").plus, .chars(".")).plus, asciiLetter.times(2, 4), urlPath)
        let dottedURL = P.seq(P.seq(P.unit(likelyLabel()).plus, .chars(".")).plus, .words(["com", "net", "org", "edu"]), urlPath)
        let emailStop = " \t\n\u{000C}\r\"<>|()\u{00A0}{}"
        let email = P.seq(P.alt(.lit("&lt;"), .chars("<")).opt, asciiAlnum, not(emailStop).star, .chars("@"),
                          P.seq(not(emailStop + ".").plus, .chars(".")).star, not(emailStop + ".").plus,
                          P.alt(.lit("&gt;"), .chars(">")).opt)
        let twitter = P.alt(.seq(.chars("@"), P.unit(JavaChar.asciiLetter | .any(of: "_")),
                                 P.unit(JavaChar.asciiAlnum | .any(of: "_")).star),
                            .seq(.chars("#"), letter.plus))

        // MARK: abbreviations
        func cs(_ first: String, _ rest: String) -> P { .seq(.exact(first), .lit(rest)) }  // "[A]z"
        let abMonth = P.words(["Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec"])
        let abDays = P.words(["Mon", "Tue", "Tues", "Wed", "Thu", "Thurs", "Fri"])
        let abState = P.alt(.words(["Ala", "Ariz"]), cs("A", "z"), cs("A", "rk"),
                            .words(["Calif", "Colo", "Conn", "Ct", "Dak"]), cs("D", "el"), .words(["Fla", "Ga"]),
                            cs("I", "ll"), .words(["Ind", "Kan", "Kans", "Ky"]), cs("L", "a"), cs("M", "ass"),
                            .words(["Md", "Mich", "Minn"]), cs("M", "iss"), .words(["Mo", "Mont", "Neb", "Nev", "Okla"]),
                            cs("O", "re"), cs("P", "a"), .words(["Penn", "Tenn"]), cs("T", "ex"), .words(["Va", "Vt"]),
                            cs("W", "ash"), .words(["Wis", "Wisc", "Wyo"]))
        let abComp = P.alt(.words(["Inc", "Co", "Cos", "Corp"]),
                           .seq(.lit("P"), P.lit("p").opt, .lit("t"), .chars("ye"), P.lit("s").opt),
                           .words(["Ltd", "Plc", "Rt", "Bancorp", "Bhd", "Assn", "Univ", "Intl", "Sys"]))
        let abNum = P.words(["tel", "est", "ext", "sq"])
        let abPtit = P.alt(.words(["Jr", "Sr", "Bros"]), .seq(.words(["Ed", "Ph"]), .lit(".D")), .words(["Blvd", "Rd", "Esq"]))
        let abbrev1 = P.seq(.alt(abMonth, abDays, abState, abComp, abNum, abPtit, .words(["etc", "al", "seq", "Bldg"])), .chars("."))
        let abTitle = P.alt(.words(["Mr", "Mrs", "Ms"]), cs("M", "iss"),
                            .words(["Dr", "Drs", "Prof", "Profs", "Sen", "Sens", "Rep", "Reps", "Atty", "Attys", "Lt",
                                    "Col", "Gen", "Messrs", "Gov", "Govs", "Adm", "Rev", "Maj", "Sgt", "Cpl", "Pvt",
                                    "Capt", "St", "Ste", "Ave", "Pres", "Lieut", "Hon", "Brig", "Cmdr", "Comdr", "Pfc",
                                    "Spc", "Supt", "Supts", "Det", "Mt", "Ft", "Adj", "Adv", "Asst", "Assoc", "Ens",
                                    "Insp", "Mlle", "Mme", "Msgr", "Sfc"]))
        let abComp2 = P.alt(.words(["Invt", "Elec", "Natl", "Dept"]), .seq(.lit("M"), .chars("ft"), .lit("g")))
        let abbrev4 = P.alt(abTitle, .words(["vs", "Alex", "Wm", "Jos", "Cie", "a.k.a", "cf", "TREAS", "Ph"]), acro, abComp2)
        let abbrev2 = P.seq(abbrev4, .chars("."))
        let acronym = P.seq(acro, .chars("."))
        let abbrev3 = P.seq(.words(["ca", "fig", "figs", "prop", "no", "nos", "art", "bldg", "pp", "op"]), .chars("."))
        let sentenceStarters = P.alt(
            cs("A", "bout"), cs("A", "ccording"), cs("A", "dditionally"), cs("A", "fter"), cs("A", "n"), .exact("A"),
            cs("A", "s"), cs("A", "t"), cs("B", "ut"), cs("E", "arlier"), cs("H", "e"), cs("H", "er"), cs("H", "ere"),
            cs("H", "owever"), cs("I", "f"), cs("I", "n"), cs("I", "t"), cs("L", "ast"), cs("M", "any"), cs("M", "ore"),
            cs("M", "r."), cs("M", "s."), cs("N", "ow"), cs("O", "nce"), cs("O", "ne"), cs("O", "ther"), cs("O", "ur"),
            cs("S", "he"), cs("S", "ince"), cs("S", "o"), cs("S", "ome"), cs("S", "uch"), cs("T", "hat"), cs("T", "he"),
            cs("T", "heir"), cs("T", "hen"), cs("T", "here"), cs("T", "hese"), cs("T", "hey"), cs("T", "his"),
            cs("W", "e"), cs("W", "hen"), cs("W", "hile"), cs("W", "hat"), cs("Y", "et"), cs("Y", "ou"), sgml)

        // MARK: punctuation and symbols
        let d = P.unit(JavaChar.asciiDigit)
        let sp = P.chars("- \u{00A0}")
        let phone = P.alt(
            .seq(.alt(.seq(.chars("("), d.times(2, 3), .chars(")"), P.chars(" \u{00A0}").opt),
                      .seq(P.seq(.chars("+"), P.chars("+").opt).opt, P.seq(d.times(2, 4), sp).opt, d.times(2, 4), sp)),
                 d.times(3, 4), sp.opt, d.times(3, 5)),
            .seq(P.seq(P.seq(.chars("+"), P.chars("+").opt).opt, d.times(2, 4), .chars(".")).opt,
                 d.times(2, 4), .chars("."), d.times(3, 4), .chars("."), d.times(3, 5)))
        let ldots = P.alt(P.chars(".").times(3, 5), .seq(P.seq(.chars("."), .chars(" \u{00A0}")).times(2, 4), .chars(".")),
                          .chars("\u{0085}\u{2026}"))
        let fnMarks = P.alt(P.chars("@").plus, P.chars("#").plus, P.chars("_").plus)
        let asts = P.alt(P.chars("*").plus, P.lit("\\*").times(1, 3))
        let inSentP = P.chars(",;:\u{3001}")
        let quotes = P.alt(apos, .lit("''"),
                           P.chars("`\u{2018}\u{2019}\u{201A}\u{201B}\u{201C}\u{201D}\u{0091}\u{0092}\u{0093}\u{0094}\u{201E}\u{201F}\u{2039}\u{203A}\u{00AB}\u{00BB}").times(1, 2))
        let dblQuot = P.alt(.chars("\""), .lit("&quot;"))
        let tbSpec = P.alt(.seq(.chars("-"), .words(["RRB", "LRB", "RCB", "LCB", "RSB", "LSB"]), .chars("-")),
                           .lit("C.D.s"), .lit("pro-"), .lit("anti-"),
                           .seq(.lit("S"), .alt(.lit("&"), spamp), .alt(.lit("P-500"), .lit("Ls"))),
                           .seq(.lit("Cap"), apos, .lit("n")), .seq(.lit("c"), apos, .lit("est")))
        let tbSpec2 = P.seq(apos, d, d)
        let smiley = P.seq(P.chars("<>").opt, .chars(":;="), P.chars("-o*'").opt, .chars("()DPdpO\\{@|[]"))
        let asianSide = "^x=~<>"
        let asianSmiley = P.alt(
            .seq(.chars(asianSide), .lit(".["), .chars(asianSide), .chars("]")),
            .seq(.chars("-" + asianSide + "'"), .chars("_"), .chars("-" + asianSide + "'")),
            .seq(.chars("("), .chars("-" + asianSide + "'"), P.chars("_.").opt, .chars("-" + asianSide + "'"), .chars(")")),
            .seq(.chars("("), .chars(asianSide + "'"), .chars("-"), .chars(asianSide + "'`"), .chars(")")))
        let miscSymbol = P.unit(.any(of: "+%&~^|\\\u{00A6}\u{00A7}\u{00A8}\u{00A9}\u{00AC}\u{00AE}\u{00AF}\u{00D7}\u{00F7}\u{0387}\u{05BE}\u{05C0}\u{05C3}\u{05C6}\u{05F3}\u{05F4}\u{060C}\u{0614}\u{061B}\u{061E}\u{066A}\u{066D}\u{07F6}\u{07F7}\u{07F8}\u{0964}\u{0965}\u{0E4F}\u{1FBD}\u{2016}\u{2017}\u{203B}\u{2044}\u{3012}\u{30FB}")
            | .ranges([0x00B0...0x00BA, 0x0600...0x0603, 0x0606...0x060A, 0x0703...0x070D, 0x2020...0x2023,
                       0x2030...0x2038, 0x203E...0x2042, 0x207A...0x207F, 0x208A...0x208E, 0x2100...0x214F,
                       0x2190...0x21FF, 0x2200...0x2BFF, 0xFF01...0xFF0F, 0xFF1A...0xFF20, 0xFF3B...0xFF40,
                       0xFF5B...0xFF65]))

        // MARK: actions
        @Sendable func tok(_ t: String, _ pushBack: Int = 0) -> PTBAction { .token(t, pushBack: pushBack) }
        let keep: @Sendable (String) -> PTBAction = { tok($0) }
        let softHyphens: @Sendable (String) -> PTBAction = { tok(PTBNormalize.removeSoftHyphens($0)) }
        let ampNormalized: @Sendable (String) -> PTBAction = { tok(PTBNormalize.normalizeAmp($0)) }
        let brackets: @Sendable (String) -> PTBAction = {
            tok($0.replacingOccurrences(of: "(", with: "-LRB-").replacingOccurrences(of: ")", with: "-RRB-"))
        }
        let nbsp: @Sendable (String) -> PTBAction = { tok($0.replacingOccurrences(of: " ", with: "\u{00A0}")) }
        let rightQuote: @Sendable (String) -> PTBAction = { tok(PTBNormalize.latexQuotes($0, probablyLeft: false)) }
        let leftQuote: @Sendable (String) -> PTBAction = { tok(PTBNormalize.latexQuotes($0, probablyLeft: true)) }
        // An abbreviation that may end a sentence: the token keeps its period and the period is
        // scanned again as a token of its own.
        let reduplicatePeriod: @Sendable (String) -> PTBAction = { tok($0, 1) }
        let r: (P, P?, @escaping @Sendable (String) -> PTBAction) -> PTBRule = { PTBRule(pattern: $0, context: $1, action: $2) }

        rules = [
            r(.lit("c++"), nil, keep),
            r(.seq(.chars("cfCF"), .chars("#")), nil, keep),
            r(.lit("cannot"), nil, { tok(String($0.utf16.prefix(3))!, 3) }),
            r(.lit("'twas"), nil, { tok(String($0.utf16.prefix(2))!, 3) }),
            r(.lit("'tis"), nil, { tok(String($0.utf16.prefix(2))!, 2) }),
            r(.words(["gonna", "gotta", "lemme", "gimme", "wanna"]), nil, { tok(String($0.utf16.prefix(3))!, 2) }),
            r(sgml, nil, nbsp),
            r(spmdash, nil, { _ in tok("--") }),
            r(spamp, nil, ampNormalized),
            r(sppunc, nil, keep),
            r(word, redaux, softHyphens),
            r(sword, sredaux, softHyphens),
            r(word, nil, softHyphens),
            r(apoword, nil, keep),
            r(apoword2, javaLetter, keep),
            r(fullURL, nil, keep),
            r(wwwURL, nil, keep),
            r(dottedURL, nil, keep),
            r(email, nil, keep),
            r(twitter, nil, keep),
            r(redaux, not("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"), rightQuote),
            r(sredaux, not("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"), rightQuote),
            r(date, nil, keep),
            r(number, nil, softHyphens),
            r(subSupNum, nil, keep),
            r(frac, nil, nbsp),
            r(frac2, nil, { tok(PTBNormalize.fractions($0)) }),
            r(tbSpec, nil, ampNormalized),
            r(thing3, nil, keep),
            r(dolSign, nil, keep),
            r(dolSign2, nil, { tok(PTBNormalize.currency($0)) }),
            r(acronym, .seq(spaceNLs, sentenceStarters, spaceNL), { t in
                t.utf16.count == 2 ? tok(String(t.utf16.prefix(1))!, 1) : tok(t, 1)
            }),
            r(abbrev3, .seq(spaceNL.opt, .unit(JavaChar.digit)), keep),
            r(.seq(.alt(.seq(.lit("pt"), .chars("eyEY")), .lit("co")), .chars(".")), .seq(space, .words(["ltd", "lim"])), keep),
            r(abbrev1, sentEnd, reduplicatePeriod),
            r(abbrev1, .seq(.unit(.all), .unit(.all)), keep),
            r(abbrev1, nil, reduplicatePeriod),
            r(abbrev2, nil, keep),
            r(abbrev4, space, keep),
            r(acro, spaceNL, keep),
            r(tbSpec2, spaceNL, keep),
            r(filename, .alt(spaceNL, .chars(".?!,")), keep),
            r(.seq(word, .chars(".")), inSentP, softHyphens),
            r(phone, nil, { t in
                tok(t.replacingOccurrences(of: " ", with: "\u{00A0}")
                    .replacingOccurrences(of: "(", with: "-LRB-").replacingOccurrences(of: ")", with: "-RRB-"))
            }),
            r(dblQuot, .unit(JavaChar.asciiAlnum | .any(of: "$")), leftQuote),
            r(dblQuot, nil, rightQuote),
            r(.chars("\u{007F}"), nil, { _ in .skip }),
            r(.alt(.chars("<"), .lit("&lt;")), nil, { _ in tok("<") }),
            r(.alt(.chars(">"), .lit("&gt;")), nil, { _ in tok(">") }),
            r(smiley, not("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"), brackets),
            r(asianSmiley, nil, brackets),
            r(.chars("{"), nil, { _ in tok("-LCB-") }),
            r(.chars("}"), nil, { _ in tok("-RCB-") }),
            r(.chars("["), nil, { _ in tok("-LSB-") }),
            r(.chars("]"), nil, { _ in tok("-RSB-") }),
            r(.chars("("), nil, { _ in tok("-LRB-") }),
            r(.chars(")"), nil, { _ in tok("-RRB-") }),
            r(P.chars("-").plus, nil, { t in (3...4).contains(t.utf16.count) ? tok("--") : tok(t) }),
            r(ldots, nil, { _ in tok("...") }),
            r(fnMarks, nil, keep),
            r(asts, nil, keep),
            r(inSentP, nil, keep),
            r(P.chars("?!").plus, nil, keep),
            r(.chars(".\u{00A1}\u{00BF}\u{037E}\u{0589}\u{061F}\u{06D4}\u{0700}\u{0701}\u{0702}\u{07FA}\u{3002}"), nil, keep),
            r(.chars("="), nil, keep),
            r(.chars("/"), nil, keep),
            r(.seq(hthing, .chars(".")), inSentP, softHyphens),
            r(hthing, nil, softHyphens),
            r(.seq(thing, .chars(".")), inSentP, keep),
            r(thing, nil, keep),
            r(.seq(thingA, .chars(".")), inSentP, ampNormalized),
            r(thingA, nil, ampNormalized),
            r(.chars("'"), .seq(asciiLetter, not(" \t\n\r\u{00A0}")), leftQuote),
            r(redaux, nil, rightQuote),
            r(sredaux, nil, rightQuote),
            r(quotes, nil, rightQuote),
            r(.alt(.lit("<<"), .lit(">>")), nil, keep),
            r(miscSymbol, nil, keep),
            r(.alt(.chars("\u{0000}\u{200B}\u{200E}\u{200F}\u{FEFF}"), space.plus), nil, { _ in .skip }),
            r(newline, nil, { _ in .newline }),
            r(.lit("&nbsp;"), nil, { _ in .skip }),
        ]
        // The rules that can start at each ASCII unit, once, instead of per tokenize call.
        let rules = self.rules
        asciiCandidates = (0..<128).map { u in rules.indices.filter { rules[$0].canStart(UInt16(u)) } }
    }
}

/// A label of a "likely URL" host: pycocoevalcap's tokenizer excludes every character from
/// ',' to '_' (a range in its class), so digits and capitals end a label.
private func likelyLabel() -> UnitClass {
    let stop = UnitClass.any(of: " \t\n\u{000C}\r\"`'<>|.!?(){}$") | .ranges([0x2C...0x5F])
    return stop.inverted
}

/// The token normalisations of the PTB tokenizer's default options.
enum PTBNormalize {
    static func removeSoftHyphens(_ s: String) -> String {
        guard s.unicodeScalars.contains("\u{00AD}") else { return s }
        let out = String(String.UnicodeScalarView(s.unicodeScalars.filter { $0 != "\u{00AD}" }))
        return out.isEmpty ? "-" : out
    }

    static func normalizeAmp(_ s: String) -> String {
        replacingCaseless(s, "&amp;", with: "&")
    }

    static func fractions(_ s: String) -> String {
        s.replacingOccurrences(of: "\u{00BC}", with: "1/4").replacingOccurrences(of: "\u{00BD}", with: "1/2")
            .replacingOccurrences(of: "\u{00BE}", with: "3/4").replacingOccurrences(of: "\u{2153}", with: "1/3")
            .replacingOccurrences(of: "\u{2154}", with: "2/3")
    }

    static func currency(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c.value {
            case 0xA2: out += "cents"
            case 0xA3: out += "#"
            case 0x80, 0xA4, 0x20A0, 0x20AC: out += "$"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// LaTeX quotes: ' and " become ` and `` when probably opening, else ' and ''; curly
    /// and angle quotes become their LaTeX forms.
    static func latexQuotes(_ s: String, probablyLeft: Bool) -> String {
        var t = s.replacingOccurrences(of: "&apos;", with: "'").replacingOccurrences(of: "&quot;", with: "\"")
        t = t.replacingOccurrences(of: "'", with: probablyLeft ? "`" : "'")
            .replacingOccurrences(of: "\"", with: probablyLeft ? "``" : "''")
        var out = ""
        for c in t.unicodeScalars {
            switch c.value {
            case 0x91, 0x2018, 0x201B, 0x2039: out += "`"
            case 0x92, 0x2019, 0x203A: out += "'"
            case 0x93, 0x201C, 0xAB: out += "``"
            case 0x94, 0x201D, 0xBB: out += "''"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    private static func replacingCaseless(_ s: String, _ target: String, with replacement: String) -> String {
        var out = ""
        var rest = Substring(s)
        let lower = target.lowercased()
        while !rest.isEmpty {
            if rest.count >= target.count, rest.prefix(target.count).lowercased() == lower {
                out += replacement
                rest = rest.dropFirst(target.count)
            } else {
                out.append(rest.removeFirst())
            }
        }
        return out
    }
}
