namespace FheNet.Preprocessing

open System
open System.Globalization
open System.IO
open Sylvan.Data.Csv

/// A CSV file that cannot be read as a table of numeric features: names the source, the line (1 = the header) and
/// the column of the problem.
type CsvFormatException(source: string, line: int, column: string, problem: string) =
    inherit FormatException($"%s{source}, line %d{line}, column '%s{column}': %s{problem}")

    /// The line of the problem (1 is the header).
    member _.Line = line

    /// The column of the problem, by name.
    member _.Column = column

/// Feature columns and a label column read from a CSV file: features as float32, labels as their text.
type CsvTable =
    { /// The names of the feature columns, in the order of the values of each row.
      Columns: string[]
      Features: float32[][]
      /// The label column's name.
      LabelColumn: string
      Labels: string[]
      /// The file line of each row (1 is the header), for messages about a row.
      Lines: int[] }

module CsvTable =

    /// The labels as numbers (invariant culture) when every one reads as a number; None when one is text.
    let numericLabels (t: CsvTable) : float[] option =
        let parsed = t.Labels |> Array.map (fun s -> Double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture))
        if parsed |> Array.forall fst then Some(parsed |> Array.map snd) else None

    /// The labels as numbers; CsvFormatException naming the first label that is not one.
    let valueLabels (source: string) (t: CsvTable) : float[] =
        t.Labels
        |> Array.mapi (fun i s ->
            match Double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture) with
            | true, v when Double.IsFinite v -> v
            | _ -> raise (CsvFormatException(source, t.Lines[i], t.LabelColumn, $"'%s{s}' is not a finite number (invariant culture, e.g. 1.5)")))

/// Reads CSV text (RFC 4180, comma-separated, a header line, invariant culture) with Sylvan.Data.Csv.
module Csv =

    /// Reads a table: the label column by name, the feature columns by name (None: every other column, in file
    /// order). Blank lines are skipped. A missing column, a ragged row, an empty cell or a feature that is not a
    /// finite number raises CsvFormatException naming the line and the column.
    let read (source: string) (text: TextReader) (label: string) (features: string[] option) : CsvTable =
        let options = CsvDataReaderOptions(HasHeaders = true, Delimiter = ',', Culture = CultureInfo.InvariantCulture)
        use reader = CsvDataReader.Create(text, options)
        let header = Array.init reader.FieldCount reader.GetName
        let fail line column problem = raise (CsvFormatException(source, line, column, problem))
        let indexOf (name: string) =
            match Array.IndexOf(header, name) with
            | -1 ->
                let known = String.Join(", ", header)
                fail 1 name $"there is no such column; the header has %s{known}"
            | i -> i
        let labelIndex = indexOf label
        let featureNames =
            match features with
            | Some names when names.Length = 0 -> fail 1 label "no feature columns were chosen"
            | Some names -> names
            | None -> header |> Array.filter (fun h -> h <> label)
        if featureNames.Length = 0 then
            fail 1 label "the file has no column beside the label"
        let featureIndices = featureNames |> Array.map indexOf
        let rows = ResizeArray<float32[]>()
        let labels = ResizeArray<string>()
        let lines = ResizeArray<int>()
        while reader.Read() do
            // The header is line 1 and every record one line (a line break quoted inside a field is not counted).
            let line = reader.RowNumber + 1
            let fields = reader.RowFieldCount
            let blank = fields <= 1 && String.IsNullOrWhiteSpace(reader.GetString 0)
            if not blank then
                if fields <> header.Length then
                    fail line (if fields < header.Length then header[fields] else $"#%d{fields}") $"the row has %d{fields} fields; the header has %d{header.Length}"
                let cell (index: int) =
                    let text = reader.GetString index
                    if String.IsNullOrWhiteSpace text then fail line header[index] "the cell is empty" else text
                let value (index: int) =
                    let text = cell index
                    match Single.TryParse(text.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture) with
                    | true, v when Single.IsFinite v -> v
                    | _ -> fail line header[index] $"'%s{text}' is not a finite number (invariant culture, e.g. 1.5)"
                rows.Add(featureIndices |> Array.map value)
                labels.Add((cell labelIndex).Trim())
                lines.Add line
        if rows.Count = 0 then
            fail 1 label "the file has a header but no rows"
        { Columns = featureNames
          Features = rows.ToArray()
          LabelColumn = label
          Labels = labels.ToArray()
          Lines = lines.ToArray() }

    /// Reads a CSV file (see read).
    let readFile (path: string) (label: string) (features: string[] option) : CsvTable =
        use text = new StreamReader(path)
        read path text label features
