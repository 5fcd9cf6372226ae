//! Where msxsync keeps things by default: the XDG base directories, resolved in one place
//! for the game folders (`catalog`), the server's state folder (`server::persist`) and
//! the players' ROM cache (`rom_cache`).
//!
//! The rules follow the XDG Base Directory Specification: a variable that is unset,
//! empty or relative is ignored and its default is used (`$HOME/.local/share`,
//! `$HOME/.local/state`, `$HOME/.cache`, `/usr/local/share:/usr/share`); relative
//! entries of `XDG_DATA_DIRS` are skipped. A relative path would depend on the folder
//! msxsync happens to be started from. `HOME` must be absolute too, else there is no
//! per-user folder.

use std::ffi::OsString;
use std::path::PathBuf;

/// The XDG variables, read once. Built with [`Xdg::from_env`], or from any lookup in
/// tests.
#[derive(Debug, Clone)]
pub struct Xdg {
    home: Option<PathBuf>,
    data_home: Option<PathBuf>,
    state_home: Option<PathBuf>,
    cache_home: Option<PathBuf>,
    data_dirs: Option<OsString>,
}

/// `value` as a path, if it is absolute (the spec calls any other value invalid).
fn absolute(value: Option<OsString>) -> Option<PathBuf> {
    value.map(PathBuf::from).filter(|p| p.is_absolute())
}

impl Xdg {
    /// The variables of this process's environment.
    pub fn from_env() -> Xdg {
        Xdg::from_vars(|name| std::env::var_os(name))
    }

    /// The variables as `var` gives them (`None` for unset).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Xdg {
        // Windows has no HOME: its per-user folder for state and caches is
        // %LOCALAPPDATA% (games come from next to the binary and ./games there).
        let local = if cfg!(windows) {
            absolute(var("LOCALAPPDATA"))
        } else {
            None
        };
        Xdg {
            home: absolute(var("HOME")),
            data_home: absolute(var("XDG_DATA_HOME")),
            state_home: absolute(var("XDG_STATE_HOME")).or_else(|| local.clone()),
            cache_home: absolute(var("XDG_CACHE_HOME")).or(local),
            data_dirs: var("XDG_DATA_DIRS").filter(|d| !d.is_empty()),
        }
    }

    /// `explicit`, else `$HOME/default`, else none.
    fn base(&self, explicit: &Option<PathBuf>, default: &str) -> Option<PathBuf> {
        explicit
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(default)))
    }

    /// `$XDG_DATA_HOME`, default `~/.local/share`: the user's data files.
    pub fn data_home(&self) -> Option<PathBuf> {
        self.base(&self.data_home, ".local/share")
    }

    /// `$XDG_STATE_HOME`, default `~/.local/state`: state that should survive a
    /// restart.
    pub fn state_home(&self) -> Option<PathBuf> {
        self.base(&self.state_home, ".local/state")
    }

    /// `$XDG_CACHE_HOME`, default `~/.cache`: files that may be deleted at any time.
    pub fn cache_home(&self) -> Option<PathBuf> {
        self.base(&self.cache_home, ".cache")
    }

    /// `$XDG_DATA_DIRS`, default `/usr/local/share` and `/usr/share`: the system's data
    /// folders, most important first.
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        let dirs = self
            .data_dirs
            .clone()
            .unwrap_or_else(|| OsString::from("/usr/local/share:/usr/share"));
        std::env::split_paths(&dirs)
            .filter(|p| p.is_absolute())
            .collect()
    }

    /// Where to look for data files, most important first: [`Xdg::data_home`], then
    /// [`Xdg::data_dirs`].
    pub fn data_search_path(&self) -> Vec<PathBuf> {
        self.data_home()
            .into_iter()
            .chain(self.data_dirs())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xdg(vars: &[(&str, &str)]) -> Xdg {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Xdg::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn defaults_are_under_home() {
        let x = xdg(&[("HOME", "/home/u")]);
        assert_eq!(x.data_home(), Some(p("/home/u/.local/share")));
        assert_eq!(x.state_home(), Some(p("/home/u/.local/state")));
        assert_eq!(x.cache_home(), Some(p("/home/u/.cache")));
        assert_eq!(x.data_dirs(), [p("/usr/local/share"), p("/usr/share")]);
        assert_eq!(
            x.data_search_path(),
            [
                p("/home/u/.local/share"),
                p("/usr/local/share"),
                p("/usr/share")
            ]
        );
    }

    #[test]
    fn local_app_data_counts_on_windows_only() {
        let local = if cfg!(windows) { "C:\\local" } else { "/local" };
        let x = xdg(&[("HOME", "/home/u"), ("LOCALAPPDATA", local)]);
        let (state, cache) = if cfg!(windows) {
            (p(local), p(local))
        } else {
            (p("/home/u/.local/state"), p("/home/u/.cache"))
        };
        assert_eq!(x.state_home(), Some(state));
        assert_eq!(x.cache_home(), Some(cache));
        assert_eq!(x.data_home(), Some(p("/home/u/.local/share")));
    }

    #[test]
    fn absolute_values_win() {
        let x = xdg(&[
            ("HOME", "/home/u"),
            ("XDG_DATA_HOME", "/d"),
            ("XDG_STATE_HOME", "/s"),
            ("XDG_CACHE_HOME", "/c"),
            ("XDG_DATA_DIRS", "/a:/b"),
        ]);
        assert_eq!(x.data_home(), Some(p("/d")));
        assert_eq!(x.state_home(), Some(p("/s")));
        assert_eq!(x.cache_home(), Some(p("/c")));
        assert_eq!(x.data_search_path(), [p("/d"), p("/a"), p("/b")]);
    }

    #[test]
    fn relative_and_empty_values_are_ignored() {
        let x = xdg(&[
            ("HOME", "/home/u"),
            ("XDG_DATA_HOME", "rel"),
            ("XDG_STATE_HOME", ""),
            ("XDG_CACHE_HOME", "./cache"),
            ("XDG_DATA_DIRS", "/a:relative::/b"),
        ]);
        assert_eq!(x.data_home(), Some(p("/home/u/.local/share")));
        assert_eq!(x.state_home(), Some(p("/home/u/.local/state")));
        assert_eq!(x.cache_home(), Some(p("/home/u/.cache")));
        assert_eq!(x.data_dirs(), [p("/a"), p("/b")]);
        // An empty XDG_DATA_DIRS means its default.
        let x = xdg(&[("XDG_DATA_DIRS", "")]);
        assert_eq!(x.data_dirs(), [p("/usr/local/share"), p("/usr/share")]);
    }

    #[test]
    fn without_an_absolute_home_there_is_no_user_folder() {
        for home in [None, Some(""), Some("rel")] {
            let x = match home {
                Some(h) => xdg(&[("HOME", h)]),
                None => xdg(&[]),
            };
            assert_eq!(x.data_home(), None, "{home:?}");
            assert_eq!(x.state_home(), None, "{home:?}");
            assert_eq!(x.cache_home(), None, "{home:?}");
        }
        // An explicit absolute value needs no HOME.
        let x = xdg(&[("XDG_STATE_HOME", "/s"), ("HOME", "rel")]);
        assert_eq!(x.state_home(), Some(p("/s")));
    }
}
