# lme4 / lmerTest reference values for the datasets made by make_data.py.
#   Rscript tests/reference/lme4_cases/make_reference.R   (from the repository root)
# Writes tests/reference/lme4_cases/reference_lme4_cases.json: per dataset and model the
# fixed effects (estimate, SE, Satterthwaite df, t, p), as.data.frame(VarCorr()), the REML
# criterion, isSingular(), and every warning and message lme4/lmerTest gave, with the
# versions used. x = +0.5 human, -0.5 AI.
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite)})
here <- "tests/reference/lme4_cases"

P <- "participant_id"; S <- "stimulus_id"
f <- function(s) as.formula(paste("valence ~ x +", s))
std <- list(
  intercepts = "(1 | participant_id) + (1 | stimulus_id)",
  uncorrelated_slope = "(1 + x || participant_id) + (1 | stimulus_id)",
  correlated_slope = "(1 + x | participant_id) + (1 | stimulus_id)")
clip_slope <- list(
  intercepts = "(1 | participant_id) + (1 | stimulus_id)",
  clip_slope_intercepts = "(1 | participant_id) + (1 + x | stimulus_id)",
  uncorrelated_slope = "(1 + x || participant_id) + (1 + x || stimulus_id)",
  correlated_slope = "(1 + x | participant_id) + (1 + x | stimulus_id)",
  participant_slope_only = "(1 + x | participant_id) + (1 | stimulus_id)")
cases <- list(
  many_clips.csv = std[c("intercepts", "correlated_slope")],
  partly_crossed.csv = std,
  within_clip.csv = clip_slope,
  one_clip_per_source.csv = std[c("intercepts", "correlated_slope")],
  clip_is_source.csv = std[c("intercepts", "correlated_slope")],
  between_participants.csv = std[c("intercepts", "correlated_slope")],
  lists.csv = c(std, list(clip_slope = clip_slope$correlated_slope)))

fit_one <- function(d, name, rhs) {
  warns <- character(0); msgs <- character(0)
  m <- withCallingHandlers(
    lmerTest::lmer(f(rhs), data = d, REML = TRUE),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(e) { msgs <<- c(msgs, trimws(conditionMessage(e))); invokeRestart("muffleMessage") })
  co <- withCallingHandlers(summary(m)$coefficients,
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") })
  fixed <- lapply(rownames(co), function(t) list(term = t, estimate = co[t, "Estimate"],
    se = co[t, "Std. Error"], df = co[t, "df"], t = co[t, "t value"], p = co[t, "Pr(>|t|)"]))
  vc <- as.data.frame(VarCorr(m))
  random <- lapply(seq_len(nrow(vc)), function(i) list(group = vc$grp[i],
    var1 = if (is.na(vc$var1[i])) NULL else vc$var1[i],
    var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i],
    variance_or_cov = vc$vcov[i], sd_or_cor = vc$sdcor[i]))
  random <- lapply(random, function(r) { for (k in c("var1", "var2")) if (is.null(r[[k]])) r[k] <- list(NULL); r })
  list(model = name, formula = paste("valence ~ x +", rhs), nobs = nobs(m),
       reml_criterion = as.numeric(REMLcrit(m)), singular = isSingular(m),
       theta = unname(getME(m, "theta")), fixed = fixed, random = random,
       warnings = as.list(warns), messages = as.list(msgs),
       lme4_conv_messages = as.list(m@optinfo$conv$lme4$messages))
}

out <- list()
for (ds in names(cases)) {
  d <- read.csv(file.path(here, ds))
  d$x <- ifelse(d$source == "human", 0.5, -0.5)
  models <- lapply(names(cases[[ds]]), function(n) fit_one(d, n, cases[[ds]][[n]]))
  out[[length(out) + 1]] <- list(dataset = ds, models = models)
  cat(ds, "done\n")
}
res <- list(generated_with = sprintf("R %s, lme4 %s, lmerTest %s (REML, Satterthwaite df)",
              paste(R.version$major, R.version$minor, sep = "."), packageVersion("lme4"),
              packageVersion("lmerTest")),
            how = "datasets: tests/reference/lme4_cases/make_data.py; this file: make_reference.R",
            datasets = out)
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE),
           file.path(here, "reference_lme4_cases.json"))
