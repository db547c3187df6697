//! An app's secrets (`wharf secret set|ls|rm`): sealed in the store, held
//! sealed in memory, and sealed again for each task that uses them; the
//! process driver opens them (through [`TaskSecrets`]) only to start the
//! task's process. No answer, event or file holds a value in clear.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use wharf_api_types::{SecretRemoved, SecretSet, SecretView};
use wharf_logs::Level;
use wharf_secrets::{from_hex, to_hex, SecretBox, MAX_VALUE};
use wharf_spec::{Diagnostic, Service, Spec, SpecError};
use wharf_store::{Db, SecretRecord};

use crate::controller::{ControlError, Controller};
use crate::error::{Invalid, NotFound};

/// What a stored value is sealed under: its app and name, so a sealed value
/// copied to another app or name does not open.
fn stored_as(app: &str, name: &str) -> String {
    format!("{app}/{name}")
}

/// What a task's copy of a value is sealed under.
fn task_copy(task: &str, var: &str) -> String {
    format!("task:{task}/{var}")
}

/// The secrets of every app, as sealed records, so a task's environment is
/// built without a store read (task specs are built synchronously).
pub(crate) struct Secrets {
    sealer: Arc<SecretBox>,
    records: Mutex<HashMap<(String, String), SecretRecord>>,
}

impl Secrets {
    pub(crate) fn new(sealer: Arc<SecretBox>) -> Secrets {
        Secrets { sealer, records: Mutex::default() }
    }

    /// Reads every stored secret and opens each once: a key that is not the
    /// one they were stored with stops the start here, before any task is
    /// re-adopted or started.
    pub(crate) async fn restore(&self, db: &Db) -> Result<(), ControlError> {
        let all = db.secrets(None).await?;
        for r in &all {
            let sealed = from_hex(&r.sealed).unwrap_or_default();
            self.sealer.open(&stored_as(&r.app, &r.name), &sealed)?;
        }
        let mut records = self.records.lock().unwrap();
        records.clear();
        records.extend(all.into_iter().map(|r| ((r.app.clone(), r.name.clone()), r)));
        Ok(())
    }

    fn remember(&self, r: SecretRecord) {
        self.records.lock().unwrap().insert((r.app.clone(), r.name.clone()), r);
    }

    fn forget(&self, app: &str, name: &str) {
        self.records.lock().unwrap().remove(&(app.to_string(), name.to_string()));
    }

    fn exists(&self, app: &str, name: &str) -> bool {
        self.records.lock().unwrap().contains_key(&(app.to_string(), name.to_string()))
    }

    /// Each secret `svc` uses, with its value's digest: part of what makes
    /// a revision, so a changed value makes a new one.
    pub(crate) fn digests(&self, app: &str, svc: &Service) -> BTreeMap<String, String> {
        let records = self.records.lock().unwrap();
        svc.secrets
            .values()
            .filter_map(|name| Some((name.clone(), records.get(&(app.to_string(), name.clone()))?.digest.clone())))
            .collect()
    }

    /// The variables of `svc` that take secrets, each value sealed for
    /// `task` alone, and their names.
    pub(crate) fn task_env(
        &self,
        app: &str,
        task: &str,
        service: &str,
        svc: &Service,
    ) -> Result<(BTreeMap<String, String>, BTreeSet<String>), ControlError> {
        let mut env = BTreeMap::new();
        for (var, name) in &svc.secrets {
            let sealed = {
                let records = self.records.lock().unwrap();
                let missing = || Invalid::MissingSecret {
                    service: service.to_string(),
                    var: var.clone(),
                    secret: name.clone(),
                    app: app.to_string(),
                };
                let r = records.get(&(app.to_string(), name.clone())).ok_or_else(missing)?;
                from_hex(&r.sealed).unwrap_or_default()
            };
            let value = self.sealer.open(&stored_as(app, name), &sealed)?;
            env.insert(var.clone(), to_hex(&self.sealer.seal(&task_copy(task, var), &value)?));
        }
        let vars = env.keys().cloned().collect();
        Ok((env, vars))
    }

    /// Each `{ secret = "..." }` of `spec` naming a secret its app does not
    /// have, with where it is written and how to set it.
    pub(crate) fn missing(&self, spec: &Spec) -> Option<SpecError> {
        let diagnostics: Vec<Diagnostic> = spec
            .secret_refs
            .iter()
            .filter(|r| !self.exists(&spec.app, &r.secret))
            .map(|r| Diagnostic {
                file: r.file.clone(),
                line: r.line,
                column: r.column,
                message: format!(
                    "env `{}` of service `{}` takes the secret `{}`, which app `{}` does not have",
                    r.var, r.service, r.secret, spec.app
                ),
                hint: Some(format!(
                    "set it first (the value is read from stdin): wharf secret set {} --app {}",
                    r.secret, spec.app
                )),
            })
            .collect();
        (!diagnostics.is_empty()).then(|| SpecError::new(diagnostics))
    }
}

/// What the process driver opens tasks' sealed variables with.
#[derive(Debug)]
pub struct TaskSecrets(pub Arc<SecretBox>);

impl wharf_runtime::EnvOpener for TaskSecrets {
    fn open(&self, task: &str, var: &str, sealed: &str) -> Result<String, String> {
        let bytes = from_hex(sealed).ok_or("its value is not sealed")?;
        let value = self.0.open(&task_copy(task, var), &bytes).map_err(|e| e.to_string())?;
        String::from_utf8(value).map_err(|_| "its value is not UTF-8".to_string())
    }
}

/// "secret `a` changed" for each secret whose digest differs between two revisions.
pub(crate) fn secret_changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names.into_iter().filter(|n| before.get(*n) != after.get(*n)).map(|n| format!("secret {n}")).collect()
}

fn check_names(app: &str, name: &str) -> Result<(), ControlError> {
    let valid_app = app.len() <= 40
        && app.starts_with(|c: char| c.is_ascii_lowercase())
        && app.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_app {
        return Err(Invalid::AppName { app: app.to_string() }.into());
    }
    wharf_spec::check_secret_name(name).map_err(|why| Invalid::SecretName { why })?;
    Ok(())
}

impl Controller {
    /// Stores `value` as the secret `name` of `app` (sealed). The app need
    /// not be deployed yet: secrets are set before the first deploy.
    pub async fn set_secret(&self, app: &str, name: &str, value: &str) -> Result<SecretSet, ControlError> {
        check_names(app, name)?;
        if value.len() > MAX_VALUE {
            return Err(Invalid::SecretTooLarge { max: MAX_VALUE, found: value.len() }.into());
        }
        if value.contains('\0') {
            return Err(Invalid::SecretNul.into());
        }
        let sealer = &self.secrets.sealer;
        let digest = sealer.digest(&stored_as(app, name), value.as_bytes());
        let old = self.db.secret(app, name).await?;
        let outcome = match &old {
            None => "created",
            Some(o) if o.digest == digest => "unchanged",
            Some(_) => "changed",
        };
        if outcome != "unchanged" {
            let now = self.now_ms();
            let record = SecretRecord {
                app: app.to_string(),
                name: name.to_string(),
                sealed: to_hex(&sealer.seal(&stored_as(app, name), value.as_bytes())?),
                digest,
                created_at: old.as_ref().map_or(now, |o| o.created_at),
                updated_at: now,
            };
            self.db.put_secret(&record).await?;
            self.secrets.remember(record);
        }
        let used_by = self.secret_users(app).await?.remove(name).unwrap_or_default();
        if outcome != "unchanged" {
            let then = if used_by.is_empty() {
                String::new()
            } else {
                format!("; the next deploy gives {} a new revision", used_by.join(", "))
            };
            self.events.event_full(
                "secret.set",
                Level::Info,
                Some(app),
                None,
                None,
                format!("secret {name} of {app} {outcome}{then}"),
            );
        }
        Ok(SecretSet { app: app.to_string(), name: name.to_string(), outcome: outcome.into(), used_by })
    }

    /// The secrets of `app`, by name, without their values.
    pub async fn secrets(&self, app: &str) -> Result<Vec<SecretView>, ControlError> {
        let mut users = self.secret_users(app).await?;
        Ok(self
            .db
            .secrets(Some(app))
            .await?
            .into_iter()
            .map(|r| SecretView {
                used_by: users.remove(&r.name).unwrap_or_default(),
                name: r.name,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
            .collect())
    }

    /// Removes a secret; refused while deployed services use it, unless
    /// `force` (their running tasks keep the value; new ones cannot start).
    pub async fn remove_secret(&self, app: &str, name: &str, force: bool) -> Result<SecretRemoved, ControlError> {
        check_names(app, name)?;
        if self.db.secret(app, name).await?.is_none() {
            return Err(NotFound::Secret { app: app.to_string(), name: name.to_string() }.into());
        }
        let users = self.secret_users(app).await?.remove(name).unwrap_or_default();
        if !users.is_empty() && !force {
            return Err(Invalid::SecretInUse { name: name.to_string(), users }.into());
        }
        self.db.delete_secret(app, name).await?;
        self.secrets.forget(app, name);
        self.events.event_full(
            "secret.removed",
            Level::Info,
            Some(app),
            None,
            None,
            format!("secret {name} of {app} removed"),
        );
        Ok(SecretRemoved { app: app.to_string(), name: name.to_string(), used_by: users })
    }

    /// Secret name → the deployed services whose current revision uses it.
    async fn secret_users(&self, app: &str) -> Result<BTreeMap<String, Vec<String>>, ControlError> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in self.db.services(Some(app)).await? {
            let rev = self.catalog.revision(app, &s.name, s.revision).await?;
            let names: BTreeSet<&String> = rev.spec.secrets.values().collect();
            for n in names {
                out.entry(n.clone()).or_default().push(s.name.clone());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Arc<SecretBox> {
        Arc::new(SecretBox::new([7; 32], wharf_secrets::KeySource::Env))
    }

    #[test]
    fn a_task_copy_opens_for_its_task_and_variable_only() {
        let secrets = Secrets::new(sealer());
        let sealed = to_hex(&secrets.sealer.seal("shop/db", b"pw-value").unwrap());
        secrets.remember(SecretRecord {
            app: "shop".into(),
            name: "db".into(),
            sealed,
            digest: "d".into(),
            created_at: 0,
            updated_at: 0,
        });
        let spec = wharf_spec::parse(
            "app = \"shop\"\n[service.web]\ncommand = \"x\"\nenv = { DB = { secret = \"db\" }, OTHER = { secret = \"nope\" } }\n",
            "wharf.toml",
        )
        .unwrap();
        let err = secrets.missing(&spec).unwrap().to_string();
        assert!(
            err.contains("wharf.toml:4:") && err.contains("`nope`") && err.contains("wharf secret set nope"),
            "{err}"
        );
        let mut web = spec.services["web"].clone();
        assert!(matches!(
            secrets.task_env("shop", "t1", "web", &web),
            Err(ControlError::Invalid(Invalid::MissingSecret { .. }))
        ));
        web.secrets.remove("OTHER");
        let (env, vars) = secrets.task_env("shop", "t1", "web", &web).unwrap();
        assert_eq!(vars.into_iter().collect::<Vec<_>>(), ["DB"]);
        assert!(!env["DB"].contains("pw-value"));
        let opener = TaskSecrets(secrets.sealer.clone());
        use wharf_runtime::EnvOpener;
        assert_eq!(opener.open("t1", "DB", &env["DB"]).unwrap(), "pw-value");
        assert!(opener.open("t2", "DB", &env["DB"]).is_err(), "another task's copy");
        assert!(opener.open("t1", "OTHER", &env["DB"]).is_err(), "another variable's copy");
        assert_eq!(secrets.digests("shop", &web).into_keys().collect::<Vec<_>>(), ["db"]);
    }

    #[test]
    fn a_revision_digest_changes_with_a_secret_digest_and_not_without_secrets() {
        use sha2::{Digest, Sha256};
        let spec = wharf_spec::parse("app = \"a\"\n[service.web]\ncommand = \"x\"\n", "wharf.toml").unwrap();
        let web = &spec.services["web"];
        // Without secrets, the digest is what it was before secrets existed.
        let mut s = web.clone();
        s.replicas = 0;
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&s).unwrap());
        h.update(b"code");
        let before: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(crate::deploy::revision_digest(web, "code", &BTreeMap::new()), before);
        let one: BTreeMap<String, String> = [("db".into(), "d1".into())].into();
        let two: BTreeMap<String, String> = [("db".into(), "d2".into())].into();
        let d1 = crate::deploy::revision_digest(web, "code", &one);
        assert_ne!(d1, before);
        assert_eq!(d1, crate::deploy::revision_digest(web, "code", &one.clone()));
        assert_ne!(d1, crate::deploy::revision_digest(web, "code", &two));
    }

    #[test]
    fn secret_changes_name_each_changed_secret() {
        let a: BTreeMap<String, String> = [("db".into(), "1".into()), ("k".into(), "2".into())].into();
        let b: BTreeMap<String, String> = [("db".into(), "9".into()), ("k".into(), "2".into())].into();
        assert_eq!(secret_changes(&a, &b), ["secret db"]);
        assert!(secret_changes(&a, &a).is_empty());
    }
}
