// Package watch tells the host when a module file in the modules folder (or
// a tenant subfolder) has settled after a change, and when it is gone.
//
// It watches folders, not files: editors save by renaming a new file over
// the old one and build tools replace files outright, so a watch on the
// file would follow the old inode away. Every event on a path restarts a
// quiet period for that path. When it ends the file must still have the
// size and mtime seen at the last event and parse as a complete sequence of
// WebAssembly sections; only then is its content hash compared with the
// last one reported and, if it differs, the caller told. Create events fire
// before a copy ends and a writer may pause longer than the quiet period, so
// the section check is what keeps a half-written file from being reported;
// a file that stays unparseable for Options.PartialWait is reported anyway,
// so that the caller can refuse it and say why.
package watch
