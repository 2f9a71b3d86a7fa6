# psych::ICC and lme4 / lmerTest reference values for the datasets made by make_data.py.
#   Rscript tests/reference/traces/make_reference.R   (from the repository root)
# Writes tests/reference/traces/reference_traces.json:
#  * icc: per matrix, psych::ICC(x, lmer = FALSE) (the two-way ANOVA mean squares, Shrout &
#    Fleiss 1979) and the default lmer = TRUE: type, ICC, F, df1, df2, p, lower and upper bound
#    (alpha = 0.05);
#  * peak_end: lmerTest::lmer(valence ~ z_peak + z_end + z_mean + (1 | participant) + (1 | clip),
#    REML) with z = scale() of each predictor (mean 0, SD 1 with n - 1): fixed effects (estimate,
#    SE, Satterthwaite df, t, p), as.data.frame(VarCorr()), the REML criterion, isSingular().
suppressPackageStartupMessages({library(psych); library(lme4); library(lmerTest); library(jsonlite)})
here <- "tests/reference/traces"

icc_rows <- function(res) {
  r <- res$results
  lapply(seq_len(nrow(r)), function(i) list(type = r$type[i], icc = r$ICC[i], F = r$F[i], df1 = r$df1[i],
    df2 = r$df2[i], p = r$p[i], lower = r[i, "lower bound"], upper = r[i, "upper bound"]))
}
icc <- list()
for (f in c("icc_shrout_fleiss.csv", "icc_trace.csv", "icc_trace_rough.csv")) {
  x <- read.csv(file.path(here, f))
  icc[[length(icc) + 1]] <- list(dataset = f, n_targets = nrow(x), n_raters = ncol(x),
    anova = icc_rows(suppressWarnings(ICC(x, lmer = FALSE))),
    lmer = icc_rows(suppressMessages(suppressWarnings(ICC(x, lmer = TRUE)))))
}

d <- read.csv(file.path(here, "peak_end.csv"))
for (p in c("peak", "end", "mean")) d[[paste0("z_", p)]] <- as.numeric(scale(d[[p]]))
form <- valence ~ z_peak + z_end + z_mean + (1 | participant) + (1 | clip)
m <- lmerTest::lmer(form, data = d, REML = TRUE)
co <- summary(m)$coefficients
fixed <- lapply(rownames(co), function(t) list(term = t, estimate = co[t, "Estimate"], se = co[t, "Std. Error"],
  df = co[t, "df"], t = co[t, "t value"], p = co[t, "Pr(>|t|)"]))
vc <- as.data.frame(VarCorr(m))
random <- lapply(seq_len(nrow(vc)), function(i) list(group = vc$grp[i], variance_or_cov = vc$vcov[i],
  sd_or_cor = vc$sdcor[i]))
peak_end <- list(dataset = "peak_end.csv", formula = paste(deparse(form), collapse = ""), nobs = nobs(m),
  reml_criterion = as.numeric(REMLcrit(m)), singular = isSingular(m), fixed = fixed, random = random)

res <- list(generated_with = sprintf("R %s, psych %s, lme4 %s, lmerTest %s",
              paste(R.version$major, R.version$minor, sep = "."), packageVersion("psych"),
              packageVersion("lme4"), packageVersion("lmerTest")),
            how = "datasets: tests/reference/traces/make_data.py; this file: make_reference.R",
            icc = icc, peak_end = peak_end)
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE),
           file.path(here, "reference_traces.json"))
cat("wrote", file.path(here, "reference_traces.json"), "\n")
