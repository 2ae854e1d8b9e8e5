from meobench.cli import main

# The guard matters: a child process started with spawn imports this module again under another name.
if __name__ == "__main__":
    main()
