//! Manifests on disk: the same YAML users would `kubectl apply`, read from one file or a
//! directory tree, turned into [`Objects`] for `translate`, and watched for changes.
//!
//! A document that does not parse is reported (file, document number, object, field)
//! and left out; the rest still loads, so one typo never takes down the other routes.
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use tokio::sync::mpsc;

use crate::api::AIRoute;
use crate::runtime::Runtime;
use crate::translate::{self, ObjectRef, Objects, Options, Severity, Translation};

/// Files larger than this are refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Directory trees deeper than this are not walked (guards against symlink loops).
const MAX_DEPTH: usize = 16;
/// More manifest files than this is almost certainly the wrong directory.
const MAX_FILES: usize = 10_000;
/// How long to wait for more file events before reloading: editors and `kubectl`-style
/// tools write a file in several steps (truncate, write, rename).
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why the manifests could not be read at all. Problems inside documents are
/// [`LoadProblem`]s instead, so everything else still loads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config path {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config path {0}: more than {MAX_FILES} manifest files; is this the right directory?")]
    TooManyFiles(PathBuf),
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A problem with one document of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProblem {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based document number within the file.
    pub document: usize,
    /// `Kind namespace/name`, when the document got far enough to say.
    pub object: Option<String>,
    /// Field path reported by the parser (`spec.routes[0].backend`), when known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: ")?;
        match &self.object {
            Some(object) => write!(f, "{object} ({}#{})", self.file.display(), self.document)?,
            None => write!(f, "{}#{}", self.file.display(), self.document)?,
        }
        if let Some(field) = &self.field {
            write!(f, " {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything read from disk in one pass.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Objects,
    pub problems: Vec<LoadProblem>,
    /// Manifest files read, in load order.
    pub files: Vec<PathBuf>,
    /// Content of every file read, to skip reloads when nothing changed.
    fingerprint: Vec<(PathBuf, Arc<[u8]>)>,
}

impl Loaded {
    pub fn error_count(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }
}

/// Manifest files under `root`: `root` itself when it is a file, else every `*.yaml` and
/// `*.yml` below it, sorted so that load order (and so conflict resolution) is stable.
pub fn manifest_files(root: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(root).map_err(|source| Error::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut out = Vec::new();
    walk(root, root, 0, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Editors' swap files and Kubernetes ConfigMap mounts' `..data` dirs are hidden.
        if name.starts_with('.') {
            continue;
        }
        // Follow symlinks: ConfigMap volumes are symlink farms.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, depth + 1, out)?;
        } else if meta.is_file() && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            if out.len() >= MAX_FILES {
                return Err(Error::TooManyFiles(root.to_path_buf()));
            }
            out.push(path);
        }
    }
    Ok(())
}

/// Read and parse every manifest under `root`. Fails only when `root` cannot be read;
/// a bad file or document becomes a [`LoadProblem`].
pub fn load(root: &Path) -> Result<Loaded> {
    Ok(ParseCache::default().load(read_all(root)?))
}

/// The manifest files under a path as read in one pass: each file's bytes, or why it
/// could not be read.
pub struct Read {
    files: Vec<PathBuf>,
    contents: Vec<std::result::Result<Arc<[u8]>, String>>,
}

impl Read {
    /// The bytes of every readable file; equal fingerprints mean nothing changed.
    fn fingerprint(&self) -> Vec<(PathBuf, Arc<[u8]>)> {
        self.files
            .iter()
            .zip(&self.contents)
            .filter_map(|(f, c)| Some((f.clone(), c.as_ref().ok()?.clone())))
            .collect()
    }
}

/// Read every manifest file under `root`. Fails only when `root` cannot be read.
pub fn read_all(root: &Path) -> Result<Read> {
    let files = manifest_files(root)?;
    let contents = files
        .iter()
        .map(|f| read_bounded(f).map(Arc::from))
        .collect();
    Ok(Read { files, contents })
}

/// Parsed files from an earlier load, by path, with the bytes they were parsed from, so
/// a reload parses only the files whose content changed. Parsing is most of a load:
/// 10,000 routes take about 0.3 s to parse and a few milliseconds to merge.
#[derive(Debug, Default)]
pub struct ParseCache {
    files: HashMap<PathBuf, ParsedFile>,
}

#[derive(Debug)]
struct ParsedFile {
    bytes: Arc<[u8]>,
    entries: Vec<Entry>,
}

impl ParseCache {
    /// Parse what changed since the last call and merge every file, in order, into one
    /// [`Loaded`]; gives exactly what parsing every file afresh gives. Files no longer
    /// present are forgotten.
    pub fn load(&mut self, read: Read) -> Loaded {
        let mut loaded = Loaded::default();
        let mut next = HashMap::with_capacity(read.files.len());
        for (file, content) in read.files.iter().zip(read.contents) {
            let bytes = match content {
                Ok(b) => b,
                Err(message) => {
                    loaded.problems.push(LoadProblem {
                        severity: Severity::Error,
                        file: file.clone(),
                        document: 0,
                        object: None,
                        field: None,
                        message,
                    });
                    continue;
                }
            };
            let parsed = match self.files.remove(file) {
                Some(p) if p.bytes == bytes => p,
                _ => ParsedFile {
                    entries: parse_bytes(file, &bytes),
                    bytes,
                },
            };
            merge(file, &parsed.entries, &mut loaded);
            loaded
                .fingerprint
                .push((file.clone(), parsed.bytes.clone()));
            next.insert(file.clone(), parsed);
        }
        self.files = next;
        loaded.files = read.files;
        loaded
    }
}

fn parse_bytes(file: &Path, bytes: &[u8]) -> Vec<Entry> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_entries(file, text),
        Err(e) => vec![Entry::Problem(LoadProblem {
            severity: Severity::Error,
            file: file.to_path_buf(),
            document: 0,
            object: None,
            field: None,
            message: format!("not UTF-8 text: {e}"),
        })],
    }
}

fn read_bounded(file: &Path) -> std::result::Result<Vec<u8>, String> {
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "file is {} bytes, more than the {MAX_FILE_BYTES} allowed",
            meta.len()
        ));
    }
    std::fs::read(file).map_err(|e| format!("cannot read: {e}"))
}

/// An object read from a document, before duplicates across files are settled.
#[derive(Debug, Clone)]
enum Parsed {
    AIRoute(Arc<AIRoute>),
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
}

/// What one file contributed, in document order.
#[derive(Debug, Clone)]
enum Entry {
    Problem(LoadProblem),
    Object {
        key: ObjectRef,
        document: usize,
        /// `file#document`, for [`Objects::origins`].
        origin: String,
        object: Parsed,
    },
}

/// Add one file's entries to `loaded`: an object defined earlier (in this file or an
/// earlier one in load order) is an error and the first definition is kept.
fn merge(file: &Path, entries: &[Entry], loaded: &mut Loaded) {
    for entry in entries {
        let (key, document, origin, object) = match entry {
            Entry::Problem(p) => {
                loaded.problems.push(p.clone());
                continue;
            }
            Entry::Object {
                key,
                document,
                origin,
                object,
            } => (key, *document, origin, object),
        };
        if let Some(previous) = loaded.objects.origins.get(key) {
            let message = format!("defined again; the definition in {previous} is kept");
            loaded.problems.push(LoadProblem {
                severity: Severity::Error,
                file: file.to_path_buf(),
                document,
                object: Some(key.to_string()),
                field: None,
                message,
            });
            continue;
        }
        loaded.objects.origins.insert(key.clone(), origin.clone());
        let o = &mut loaded.objects;
        match object {
            Parsed::AIRoute(x) => o.airroutes.push(x.clone()),
            Parsed::Ingress(x) => o.ingresses.push(x.clone()),
            Parsed::IngressClass(x) => o.ingress_classes.push(x.clone()),
            Parsed::Service(x) => o.services.push(x.clone()),
            Parsed::EndpointSlice(x) => o.endpoint_slices.push(x.clone()),
            Parsed::Secret(x) => o.secrets.push(x.clone()),
        }
    }
}

/// Parse every document of one file into `loaded`.
pub fn parse_file(file: &Path, text: &str, loaded: &mut Loaded) {
    merge(file, &parse_entries(file, text), loaded);
}

/// Parse every document of one file, on its own: duplicates are found by [`merge`].
fn parse_entries(file: &Path, text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = index + 1;
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                entries.push(Entry::Problem(LoadProblem {
                    severity: Severity::Error,
                    file: file.to_path_buf(),
                    document,
                    object: None,
                    field: None,
                    message: format!("invalid YAML: {e}"),
                }));
                // After a syntax error the parser cannot find the next document reliably.
                break;
            }
        };
        let mut ctx = DocContext {
            file,
            document,
            entries: &mut entries,
        };
        ctx.add_value(value, None);
    }
    entries
}

struct DocContext<'a> {
    file: &'a Path,
    document: usize,
    entries: &'a mut Vec<Entry>,
}

impl DocContext<'_> {
    fn problem(
        &mut self,
        severity: Severity,
        object: Option<String>,
        field: Option<String>,
        message: String,
    ) {
        self.entries.push(Entry::Problem(LoadProblem {
            severity,
            file: self.file.to_path_buf(),
            document: self.document,
            object,
            field,
            message,
        }));
    }

    /// `item` is the index within a `kind: List`, used to prefix field paths.
    fn add_value(&mut self, value: Value, item: Option<usize>) {
        let prefix = item.map(|i| format!("items[{i}]")).unwrap_or_default();
        let join = |field: &str| match (prefix.is_empty(), field.is_empty()) {
            (true, _) => field.to_string(),
            (false, true) => prefix.clone(),
            (false, false) => format!("{prefix}.{field}"),
        };
        let map = match &value {
            Value::Null => return, // empty document, e.g. a trailing `---`
            Value::Mapping(m) => m,
            _ => {
                self.problem(
                    Severity::Error,
                    None,
                    Some(join("")).filter(|f| !f.is_empty()),
                    "a manifest must be a mapping with apiVersion and kind".into(),
                );
                return;
            }
        };
        let str_field = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_string);
        let api_version = str_field("apiVersion");
        let kind = str_field("kind");
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let namespace = map
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            self.problem(
                Severity::Error,
                None,
                Some(join("")).filter(|f| !f.is_empty()),
                "missing apiVersion or kind".into(),
            );
            return;
        };
        let cluster_scoped = kind == "IngressClass";
        let label = match &name {
            Some(n) if cluster_scoped => format!("{kind} {n}"),
            Some(n) => format!("{kind} {}/{n}", namespace.as_deref().unwrap_or("default")),
            None => kind.clone(),
        };
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "List") => {
                let items = match map.get("items") {
                    Some(Value::Sequence(items)) => items.clone(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        self.problem(
                            Severity::Error,
                            Some(label),
                            Some(join("items")),
                            "items must be a list of manifests".into(),
                        );
                        return;
                    }
                };
                if item.is_some() {
                    self.problem(
                        Severity::Error,
                        Some(label),
                        Some(join("")),
                        "a List inside a List is not supported".into(),
                    );
                    return;
                }
                for (i, v) in items.into_iter().enumerate() {
                    self.add_value(v, Some(i));
                }
            }
            ("airgate.dev/v1alpha1", "AIRoute") => {
                if let Some(obj) = self.typed::<AIRoute>(&value, &label, &join) {
                    let mut obj: AIRoute = obj;
                    default_namespace(&mut obj.metadata);
                    self.insert(&kind, Parsed::AIRoute(Arc::new(obj)));
                }
            }
            ("networking.k8s.io/v1", "Ingress") => {
                if let Some(mut obj) = self.typed::<Ingress>(&value, &label, &join) {
                    default_namespace(&mut obj.metadata);
                    self.insert(&kind, Parsed::Ingress(Arc::new(obj)));
                }
            }
            ("networking.k8s.io/v1", "IngressClass") => {
                if let Some(obj) = self.typed::<IngressClass>(&value, &label, &join) {
                    self.insert(&kind, Parsed::IngressClass(Arc::new(obj)));
                }
            }
            ("v1", "Service") => {
                if let Some(mut obj) = self.typed::<Service>(&value, &label, &join) {
                    default_namespace(&mut obj.metadata);
                    self.insert(&kind, Parsed::Service(Arc::new(obj)));
                }
            }
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                if let Some(mut obj) = self.typed::<EndpointSlice>(&value, &label, &join) {
                    default_namespace(&mut obj.metadata);
                    self.insert(&kind, Parsed::EndpointSlice(Arc::new(obj)));
                }
            }
            ("v1", "Secret") => {
                if let Some(mut obj) = self.typed::<Secret>(&value, &label, &join) {
                    if obj.type_.as_deref() != Some("kubernetes.io/tls") {
                        self.problem(
                            Severity::Warning,
                            Some(label),
                            Some(join("type")),
                            format!(
                                "Secret of type {:?} ignored; only kubernetes.io/tls Secrets are used",
                                obj.type_.as_deref().unwrap_or("Opaque")
                            ),
                        );
                        return;
                    }
                    default_namespace(&mut obj.metadata);
                    self.insert(&kind, Parsed::Secret(Arc::new(obj)));
                }
            }
            ("airgate.dev" | "networking.k8s.io" | "discovery.k8s.io", _)
            | (
                _,
                "AIRoute" | "Ingress" | "IngressClass" | "Service" | "EndpointSlice" | "Secret",
            ) => {
                self.problem(
                    Severity::Error,
                    Some(label),
                    Some(join("apiVersion")),
                    format!(
                        "apiVersion {api_version:?} is not supported for {kind}; use {}",
                        supported_version(&kind)
                    ),
                );
            }
            _ => {
                self.problem(
                    Severity::Warning,
                    Some(label),
                    None,
                    format!("kind {kind} ({api_version}) is not used by airgate; ignored"),
                );
            }
        }
    }

    /// Deserialize `value` as `T`, reporting the field path on failure.
    ///
    /// Errors need the text deserializer, the only one of serde_yaml's that tracks the
    /// path (`spec.routes[0].backend`) of an error, so a value that does not deserialize
    /// directly is re-serialized and parsed again from text. Both give the same object
    /// for a [`direct_ok`] value; the round trip used to be 45% of loading large configs.
    fn typed<T: DeserializeOwned>(
        &mut self,
        value: &Value,
        label: &str,
        join: &dyn Fn(&str) -> String,
    ) -> Option<T> {
        if direct_ok(value) {
            if let Ok(obj) = T::deserialize(value) {
                return Some(obj);
            }
        }
        let text = match serde_yaml::to_string(value) {
            Ok(t) => t,
            Err(e) => {
                self.problem(Severity::Error, Some(label.into()), None, e.to_string());
                return None;
            }
        };
        match serde_yaml::from_str::<T>(&text) {
            Ok(obj) => Some(obj),
            Err(e) => {
                let (field, message) = split_serde_error(&e.to_string());
                let field = join(field.as_deref().unwrap_or(""));
                self.problem(
                    Severity::Error,
                    Some(label.into()),
                    Some(field).filter(|f| !f.is_empty()),
                    message,
                );
                None
            }
        }
    }

    fn insert(&mut self, kind: &str, object: Parsed) {
        let meta = object.metadata();
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            self.problem(
                Severity::Error,
                Some(kind.to_string()),
                Some("metadata.name".into()),
                "every object needs a name".into(),
            );
            return;
        };
        let key = ObjectRef {
            kind: kind.to_string(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name,
        };
        self.entries.push(Entry::Object {
            key,
            document: self.document,
            origin: format!("{}#{}", self.file.display(), self.document),
            object,
        });
    }
}

impl Parsed {
    fn metadata(&self) -> &ObjectMeta {
        match self {
            Parsed::AIRoute(o) => &o.metadata,
            Parsed::Ingress(o) => &o.metadata,
            Parsed::IngressClass(o) => &o.metadata,
            Parsed::Service(o) => &o.metadata,
            Parsed::EndpointSlice(o) => &o.metadata,
            Parsed::Secret(o) => &o.metadata,
        }
    }
}

/// Whether deserializing straight from `value` gives what the text round trip in
/// [`DocContext::typed`] gives. Not with a null (the value deserializer reads it as an
/// empty list or map, text as an error, and as the string "null" where a string is
/// expected), a tag, or a key that is not a string.
fn direct_ok(value: &Value) -> bool {
    match value {
        Value::Null | Value::Tagged(_) => false,
        Value::Bool(_) | Value::Number(_) | Value::String(_) => true,
        Value::Sequence(items) => items.iter().all(direct_ok),
        Value::Mapping(m) => m.iter().all(|(k, v)| k.is_string() && direct_ok(v)),
    }
}

fn supported_version(kind: &str) -> &'static str {
    match kind {
        "AIRoute" => "airgate.dev/v1alpha1",
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        _ => "v1",
    }
}

fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".into());
    }
}

/// serde_yaml renders errors as `path.to.field: message at line L column C`. The line
/// refers to the re-serialized document, so it is dropped; the path is kept apart.
fn split_serde_error(msg: &str) -> (Option<String>, String) {
    let msg = match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => &msg[..i],
        _ => msg,
    };
    // A path has no spaces; messages such as "missing field `x`" do.
    if let Some((path, rest)) = msg.split_once(": ")
        && !path.contains(' ')
        && !path.is_empty()
    {
        return (Some(path.to_string()), rest.to_string());
    }
    (None, msg.to_string())
}

/// Origin of `object` as `file#document`, for messages.
pub fn origin<'a>(objects: &'a Objects, object: &ObjectRef) -> Option<&'a str> {
    objects.origins.get(object).map(String::as_str)
}

/// One reload's result, for logging and `check`.
pub struct Outcome {
    pub loaded: Loaded,
    pub translation: Translation,
}

impl Outcome {
    pub fn errors(&self) -> usize {
        self.loaded.error_count()
            + self
                .translation
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count()
    }

    pub fn warnings(&self) -> usize {
        self.loaded.problems.len() - self.loaded.error_count()
            + self
                .translation
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Warning)
                .count()
    }

    /// Every problem as one line each: load problems first, then translation diagnostics
    /// with the file and document the object came from.
    pub fn lines(&self) -> Vec<(Severity, String)> {
        let mut out: Vec<(Severity, String)> = self
            .loaded
            .problems
            .iter()
            .map(|p| (p.severity, p.to_string()))
            .collect();
        for d in &self.translation.diagnostics {
            let sev = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let origin = origin(&self.loaded.objects, &d.object)
                .map(|o| format!(" ({o})"))
                .unwrap_or_default();
            let field = if d.field.is_empty() {
                String::new()
            } else {
                format!(" {}", d.field)
            };
            out.push((
                d.severity,
                format!("{sev}: {}{origin}{field}: {}", d.object, d.message),
            ));
        }
        out
    }
}

/// Load and translate without publishing (`airgate check`, and each reload).
pub fn load_and_translate(root: &Path, options: &Options) -> Result<Outcome> {
    let loaded = load(root)?;
    let translation = translate::translate(&loaded.objects, options);
    Ok(Outcome {
        loaded,
        translation,
    })
}

/// Serves the manifests under one path: loads, publishes, and reloads on change.
pub struct FileSource {
    root: PathBuf,
    options: Options,
    runtime: Arc<Runtime>,
    last: Option<Vec<(PathBuf, Arc<[u8]>)>>,
    cache: ParseCache,
}

impl FileSource {
    pub fn new(root: PathBuf, options: Options, runtime: Arc<Runtime>) -> Self {
        FileSource {
            root,
            options,
            runtime,
            last: None,
            cache: ParseCache::default(),
        }
    }

    /// Read, translate and publish in one atomic swap. When the files cannot be read at
    /// all, the last good snapshot keeps serving and the error is returned.
    ///
    /// Returns `Ok(None)` when nothing changed on disk since the last reload.
    pub fn reload(&mut self) -> Result<Option<Outcome>> {
        let metrics = crate::telemetry::metrics();
        let started = Instant::now();
        let read = match read_all(&self.root) {
            Ok(r) => r,
            Err(e) => {
                metrics.config_reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "cannot read configuration; still serving the last good one");
                return Err(e);
            }
        };
        if self.last.as_ref() == Some(&read.fingerprint()) {
            return Ok(None);
        }
        // Only files whose content changed are parsed again.
        let loaded = self.cache.load(read);
        if loaded.files.is_empty() {
            tracing::warn!(path = %self.root.display(), "no *.yaml or *.yml manifests found; serving no routes");
        }
        let translation = translate::translate(&loaded.objects, &self.options);
        let outcome = Outcome {
            loaded,
            translation,
        };
        for (severity, line) in outcome.lines() {
            match severity {
                Severity::Error => tracing::error!("{line}"),
                Severity::Warning => tracing::warn!("{line}"),
            }
        }
        Ok(Some(self.finish(outcome, started)))
    }

    fn finish(&mut self, mut outcome: Outcome, started: Instant) -> Outcome {
        let metrics = crate::telemetry::metrics();
        let config = std::mem::take(&mut outcome.translation.config);
        let (generation, previous) = self.runtime.swap_in(config);
        let errors = outcome.errors();
        metrics.translation_errors.set(errors as i64);
        metrics.config_reloads.with_label_values(&["success"]).inc();
        metrics
            .config_reload_duration
            .observe(started.elapsed().as_secs_f64());
        drop(previous);
        tracing::info!(
            generation,
            files = outcome.loaded.files.len(),
            objects = outcome.loaded.objects.origins.len(),
            errors,
            warnings = outcome.warnings(),
            "configuration loaded"
        );
        self.last = Some(std::mem::take(&mut outcome.loaded.fingerprint));
        outcome
    }

    fn start_watcher(&self, tx: mpsc::Sender<()>) -> Result<notify::RecommendedWatcher> {
        use notify::{RecursiveMode, Watcher};

        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(ev) => !matches!(ev.kind, notify::EventKind::Access(_)),
                    Err(_) => true,
                };
                // A full channel already holds a pending reload; dropping is fine.
                if relevant {
                    let _ = tx.try_send(());
                }
            })
            .map_err(|source| Error::Watch {
                path: self.root.clone(),
                source,
            })?;
        let is_file = std::fs::metadata(&self.root)
            .map(|m| m.is_file())
            .unwrap_or(false);
        let (watch_path, mode) = if is_file {
            let parent = match self.root.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (parent, RecursiveMode::NonRecursive)
        } else {
            (self.root.clone(), RecursiveMode::Recursive)
        };
        watcher
            .watch(&watch_path, mode)
            .map_err(|source| Error::Watch {
                path: watch_path.clone(),
                source,
            })?;
        tracing::debug!(path = %watch_path.display(), "watching configuration");
        Ok(watcher)
    }

    /// Watch the path and reload on every change until `shutdown` resolves.
    ///
    /// The watch is on the directory (the file's parent in single-file mode) because
    /// editors save by writing a new file and renaming it over the old one, which
    /// removes the inode a file watch would follow.
    pub async fn watch(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        // Without a watcher (inotify limits, unsupported filesystem) polling still works,
        // just slower, rather than silently never reloading.
        let (watcher, period) = match self.start_watcher(tx) {
            Ok(w) => (Some(w), Duration::from_secs(30)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for changes; re-reading every 2s instead");
                (None, Duration::from_secs(2))
            }
        };
        let watching = watcher.is_some();

        tokio::pin!(shutdown);
        // A slow periodic re-read catches changes the watcher misses (network
        // filesystems, ConfigMap symlink swaps on some kernels); unchanged files are
        // skipped cheaply by the fingerprint.
        let mut resync = tokio::time::interval(period);
        // The first tick fires at once: it catches edits made between the initial load
        // and the watch being set up (unchanged files are skipped by the fingerprint).
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = resync.tick() => {}
                event = rx.recv(), if watching => {
                    if event.is_none() {
                        return Ok(());
                    }
                    // Debounce: one reload for a burst of events.
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
            }
            // Reading files blocks; keep it off the async workers.
            let mut source = self;
            let (back, _result) = tokio::task::spawn_blocking(move || {
                let r = source.reload().map(|_| ());
                (source, r)
            })
            .await
            .map_err(|e| Error::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })?;
            self = back;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Loaded {
        let mut loaded = Loaded::default();
        parse_file(Path::new("x.yaml"), text, &mut loaded);
        loaded
    }

    const ROUTE: &str = r#"
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {name: good}
spec:
  routes:
    - path: /llm/
      backend: {url: "http://127.0.0.1:9"}
"#;

    #[test]
    fn parses_multi_document_and_defaults_namespace() {
        let text = format!(
            "{ROUTE}---\napiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: ai}}\nspec: {{ports: [{{port: 80}}]}}\n---\n"
        );
        let l = parse(&text);
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.objects.airroutes.len(), 1);
        assert_eq!(
            l.objects.airroutes[0].metadata.namespace.as_deref(),
            Some("default")
        );
        assert_eq!(l.objects.services.len(), 1);
        let key = ObjectRef {
            kind: "Service".into(),
            namespace: "ai".into(),
            name: "s".into(),
        };
        assert_eq!(
            l.objects.origins.get(&key).map(String::as_str),
            Some("x.yaml#2")
        );
    }

    #[test]
    fn bad_document_is_reported_with_field_and_others_load() {
        let bad = r#"
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {name: bad, namespace: ai}
spec:
  routes:
    - path: /x/
      backend: {url: "http://127.0.0.1:9"}
      maxBodySize: [1, 2]
"#;
        let l = parse(&format!("{bad}---{ROUTE}"));
        assert_eq!(l.objects.airroutes.len(), 1, "the good route still loads");
        assert_eq!(l.problems.len(), 1);
        let p = &l.problems[0];
        assert_eq!(p.document, 1);
        assert_eq!(p.object.as_deref(), Some("AIRoute ai/bad"));
        assert_eq!(p.field.as_deref(), Some("spec.routes[0].maxBodySize"));
        let line = p.to_string();
        assert!(
            line.starts_with("error: AIRoute ai/bad (x.yaml#1) spec.routes[0].maxBodySize: "),
            "{line}"
        );
    }

    #[test]
    fn missing_required_field_names_its_parent() {
        let l = parse(
            "apiVersion: airgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: r}\nspec:\n  routes:\n    - path: /a/\n",
        );
        let p = &l.problems[0];
        assert_eq!(p.field.as_deref(), Some("spec.routes[0]"));
        assert!(p.message.contains("backend"), "{}", p.message);
    }

    #[test]
    fn list_items_unknown_kinds_and_non_tls_secrets() {
        let l = parse(
            r#"
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: cm}
  - apiVersion: v1
    kind: Secret
    metadata: {name: opaque}
    type: Opaque
  - apiVersion: v1
    kind: Secret
    metadata: {name: tls}
    type: kubernetes.io/tls
    data: {tls.crt: "", tls.key: ""}
  - apiVersion: networking.k8s.io/v1
    kind: IngressClass
    metadata: {name: airgate}
    spec: {controller: airgate.dev/ingress-controller}
"#,
        );
        assert_eq!(l.objects.secrets.len(), 1);
        assert_eq!(l.objects.ingress_classes.len(), 1);
        assert_eq!(
            l.objects.ingress_classes[0].metadata.namespace, None,
            "IngressClass is cluster scoped"
        );
        assert_eq!(l.error_count(), 0, "{:?}", l.problems);
        assert_eq!(l.problems.len(), 2, "{:?}", l.problems);
        assert!(l.problems[0].message.contains("ConfigMap"));
        assert_eq!(l.problems[1].field.as_deref(), Some("items[1].type"));
    }

    #[test]
    fn wrong_api_version_and_syntax_errors_are_errors() {
        let l =
            parse("apiVersion: networking.k8s.io/v1beta1\nkind: Ingress\nmetadata: {name: old}\n");
        assert_eq!(l.error_count(), 1);
        assert!(l.problems[0].message.contains("networking.k8s.io/v1"));

        let l = parse(&format!("{ROUTE}---\nkind: [unclosed\n"));
        assert_eq!(l.objects.airroutes.len(), 1);
        assert_eq!(l.error_count(), 1);
        assert_eq!(l.problems[0].document, 2);
    }

    #[test]
    fn duplicate_objects_keep_the_first() {
        let l = parse(&format!("{ROUTE}---{ROUTE}"));
        assert_eq!(l.objects.airroutes.len(), 1);
        assert_eq!(l.error_count(), 1);
        assert!(l.problems[0].message.contains("x.yaml#1"));
    }

    /// Deserialize `value` both ways `typed` can.
    fn both_ways<T: DeserializeOwned + fmt::Debug>(value: &Value) -> (String, String) {
        let direct = T::deserialize(value).map(|o| format!("{o:?}"));
        let text = serde_yaml::to_string(value).expect("serialize");
        let via_text = serde_yaml::from_str::<T>(&text).map(|o| format!("{o:?}"));
        (
            direct.unwrap_or_else(|e| format!("error: {e}")),
            via_text.unwrap_or_else(|e| format!("error: {e}")),
        )
    }

    /// Manifests exercising every kind and most field types: the shipped examples, plus
    /// int-or-string ports, quantities, timestamps, base64 data and nested lists.
    fn sample_documents() -> Vec<Value> {
        let root = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        );
        let mut text = String::new();
        for f in [
            "examples/ai-stack/airroute.yaml",
            "examples/ai-stack/ingress-migration.yaml",
        ] {
            text += &std::fs::read_to_string(root.join(f)).expect("example");
            text += "\n---\n";
        }
        text += r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ai, labels: {app: x}, creationTimestamp: "2024-01-02T03:04:05Z"}
spec:
  type: ClusterIP
  ports:
    - {name: http, port: 80, targetPort: 8080, appProtocol: https}
    - {name: grpc, port: 9000, targetPort: grpc}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: ai, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
  - addresses: ["10.0.0.1", "10.0.0.2"]
    conditions: {ready: true, serving: false}
---
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: ai}
type: kubernetes.io/tls
data: {tls.crt: "aGVsbG8=", tls.key: "d29ybGQ="}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: i
  annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 8m, airgate.dev/limit-rps: "5"}
spec:
  ingressClassName: airgate
  tls: [{hosts: [a.example.com], secretName: tls}]
  defaultBackend: {service: {name: s, port: {name: http}}}
  rules:
    - host: a.example.com
      http:
        paths:
          - {path: /x, pathType: Exact, backend: {service: {name: s, port: {number: 80}}}}
---
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {name: a, namespace: ai}
spec:
  hosts: ["*.example.com"]
  rateZones: [{name: z, rate: 10r/s, size: 1Mi}]
  routes:
    - path: /v1/
      pathType: Exact
      stripPrefix: true
      maxBodySize: 10Mi
      timeouts: {read: 30s}
      rateLimit: {zone: z, burst: 3, nodelay: true}
      backend: {service: {name: s, port: 80}}
"#;
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).expect("valid YAML"))
            .filter(|v| !v.is_null())
            .collect()
    }

    #[test]
    fn direct_deserialization_matches_the_text_round_trip() {
        let docs = sample_documents();
        assert!(docs.len() >= 8, "{}", docs.len());
        let mut kinds = std::collections::BTreeSet::new();
        for v in &docs {
            assert!(direct_ok(v), "{v:?}");
            let kind = v.get("kind").and_then(Value::as_str).expect("kind");
            let (direct, text) = match kind {
                "AIRoute" => both_ways::<AIRoute>(v),
                "Ingress" => both_ways::<Ingress>(v),
                "IngressClass" => both_ways::<IngressClass>(v),
                "Service" => both_ways::<Service>(v),
                "EndpointSlice" => both_ways::<EndpointSlice>(v),
                "Secret" => both_ways::<Secret>(v),
                other => panic!("unexpected kind {other}"),
            };
            assert!(!direct.starts_with("error"), "{kind}: {direct}");
            assert_eq!(direct, text, "{kind}");
            kinds.insert(kind.to_string());
        }
        assert_eq!(kinds.len(), 6, "{kinds:?}");
    }

    #[test]
    fn values_the_direct_path_would_read_differently_take_the_text_path() {
        // The value deserializer reads a null list as empty; text reads it as an error,
        // and that error is what users have always been shown.
        let doc = "apiVersion: airgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: r}\nspec:\n  hosts: ~\n  routes:\n    - path: /a/\n      backend: {url: \"http://127.0.0.1:9\"}\n";
        let (direct, text) = both_ways::<AIRoute>(&serde_yaml::from_str(doc).expect("yaml"));
        assert!(
            !direct.starts_with("error") && text.starts_with("error"),
            "{direct} / {text}"
        );
        let l = parse(doc);
        assert_eq!(l.error_count(), 1, "{:?}", l.problems);
        assert_eq!(l.problems[0].field.as_deref(), Some("spec.hosts"));
        // Numbers where strings are expected deserialize through text, as before.
        let l = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, labels: {n: 1}}\nspec: {ports: [{port: 80}]}\n",
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        let labels = l.objects.services[0]
            .metadata
            .labels
            .as_ref()
            .expect("labels");
        assert_eq!(labels.get("n").map(String::as_str), Some("1"));
        for text in ["a: ~", "a: !t x", "1: x", "a: [1, {b: null}]"] {
            let v: Value = serde_yaml::from_str(text).expect("yaml");
            assert!(!direct_ok(&v), "{text}");
        }
    }

    fn write(dir: &Path, name: &str, text: &[u8]) {
        std::fs::write(dir.join(name), text).expect("write");
    }

    /// Everything a load yields, printable and deterministic, to compare two loads.
    fn summary(l: &Loaded) -> String {
        format!("{:?}\n{:?}\n{:?}", l.objects, l.problems, l.files)
    }

    #[test]
    fn cached_reload_equals_a_fresh_load_and_parses_only_changed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let route = |name: &str, path: &str| {
            format!(
                "apiVersion: airgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}}}\nspec:\n  routes:\n    - path: {path}\n      backend: {{url: \"http://127.0.0.1:9\"}}\n"
            )
        };
        // a.yaml and c.yaml both define `dup`: the one in a.yaml wins while it exists.
        write(
            d,
            "a.yaml",
            format!("{}---\n{}", route("one", "/1/"), route("dup", "/a/")).as_bytes(),
        );
        write(
            d,
            "b.yaml",
            format!("{}---\nkind: [unclosed\n", route("two", "/2/")).as_bytes(),
        );
        write(d, "c.yaml", route("dup", "/c/").as_bytes());
        write(d, "d.yaml", b"\xff\xfe not text");

        let mut cache = ParseCache::default();
        let first = cache.load(read_all(d).expect("read"));
        assert_eq!(summary(&first), summary(&load(d).expect("load")));
        assert_eq!(first.objects.airroutes.len(), 3);
        assert_eq!(first.error_count(), 3, "{:?}", first.problems);

        // Change a.yaml only: `dup` now comes from c.yaml, with no duplicate error.
        write(d, "a.yaml", route("one", "/1/").as_bytes());
        write(d, "e.yaml", route("three", "/3/").as_bytes());
        let second = cache.load(read_all(d).expect("read"));
        assert_eq!(summary(&second), summary(&load(d).expect("load")));
        assert_eq!(second.error_count(), 2, "{:?}", second.problems);
        let origin = second.objects.origins.iter().find(|(k, _)| k.name == "dup");
        assert!(
            origin.is_some_and(|(_, o)| o.ends_with("c.yaml#1")),
            "{origin:?}"
        );

        // Unchanged files were not parsed again: their cached bytes are reused as is.
        let bytes = |l: &Loaded, name: &str| {
            l.fingerprint
                .iter()
                .find(|(f, _)| f.ends_with(name))
                .map(|(_, b)| b.clone())
                .expect("file")
        };
        assert!(Arc::ptr_eq(
            &bytes(&first, "b.yaml"),
            &bytes(&second, "b.yaml")
        ));
        assert!(Arc::ptr_eq(
            &bytes(&first, "c.yaml"),
            &bytes(&second, "c.yaml")
        ));
        assert!(!Arc::ptr_eq(
            &bytes(&first, "a.yaml"),
            &bytes(&second, "a.yaml")
        ));

        // A removed file is forgotten, and the translation is that of a fresh load.
        std::fs::remove_file(d.join("c.yaml")).expect("rm");
        let third = cache.load(read_all(d).expect("read"));
        assert_eq!(summary(&third), summary(&load(d).expect("load")));
        assert_eq!(cache.files.len(), 4);
        let options = Options::default();
        let cached = translate::translate(&third.objects, &options);
        let fresh = translate::translate(&load(d).expect("load").objects, &options);
        assert_eq!(cached.diagnostics, fresh.diagnostics);
        assert_eq!(cached.accepted, fresh.accepted);
    }

    #[test]
    fn directory_walk_is_sorted_and_skips_hidden_and_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("b")).expect("mkdir");
        std::fs::create_dir(dir.path().join("..data")).expect("mkdir");
        for f in [
            "b/z.yml",
            "a.yaml",
            "notes.txt",
            ".swp.yaml",
            "..data/x.yaml",
        ] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        let files = manifest_files(dir.path()).expect("walk");
        let rel: Vec<_> = files
            .iter()
            .map(|f| {
                f.strip_prefix(dir.path())
                    .expect("under root")
                    .to_path_buf()
            })
            .collect();
        assert_eq!(rel, vec![PathBuf::from("a.yaml"), PathBuf::from("b/z.yml")]);
        assert!(matches!(
            manifest_files(&dir.path().join("missing")),
            Err(Error::Io { .. })
        ));
    }
}
